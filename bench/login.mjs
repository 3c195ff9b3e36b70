// Logs in through the real provider the way a browser does — start URL, redirect to the
// provider, its login form (alice / secret), redirect back to the callback — and prints the
// cookies the target set, as one `Cookie` header value.
//
//   node bench/login.mjs URL                      one login; prints the Cookie header
//   node bench/login.mjs URL --count N --concurrency C
//                                                 N logins, C at a time; prints
//                                                 {"logins":N,"seconds":S,"per_second":R}
//
// Each login uses a fresh cookie jar. Only 127.0.0.1 and localhost are ever contacted.

import http from 'node:http';

// node:http rather than fetch(): fetch always sends `Sec-Fetch-Mode: cors`, which
// mod_auth_openidc answers with 401 instead of a login redirect.
const agent = new http.Agent({ keepAlive: true });
function send(url, { method = 'GET', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({
        status: res.statusCode,
        location: res.headers.location,
        setCookies: res.headers['set-cookie'] || [],
        text: Buffer.concat(chunks).toString('utf8'),
      }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}

const [start, ...rest] = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = rest.indexOf(name);
  return i >= 0 ? Number(rest[i + 1]) : fallback;
};
const count = opt('--count', 0);
const concurrency = opt('--concurrency', 1);

const local = (url) => ['127.0.0.1', 'localhost'].includes(new URL(url).hostname);

async function login(startUrl) {
  const jar = new Map(); // host:port -> Map(name -> value)
  const targetOrigin = new URL(startUrl).host;
  const cookieHeader = (url) => {
    const c = jar.get(new URL(url).host);
    return c ? [...c].map(([k, v]) => `${k}=${v}`).join('; ') : '';
  };
  const remember = (url, res) => {
    const host = new URL(url).host;
    for (const line of res.setCookies) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = attrs.some((a) => /^\s*max-age=0\s*$/i.test(a)) || value === '';
      if (!jar.has(host)) jar.set(host, new Map());
      if (expired) jar.get(host).delete(name);
      else jar.get(host).set(name, value);
    }
  };
  const request = async (url, init = {}) => {
    if (!local(url)) throw new Error(`refusing to contact ${url}`);
    // A top-level navigation, as mod_auth_openidc distinguishes it from an XHR.
    const headers = {
      accept: 'text/html',
      'sec-fetch-mode': 'navigate',
      'sec-fetch-dest': 'document',
      ...(init.headers || {}),
    };
    const cookie = cookieHeader(url);
    if (cookie) headers.cookie = cookie;
    const res = await send(url, { ...init, headers });
    remember(url, res);
    return res;
  };

  let url = startUrl;
  let sawProvider = false;
  for (let hop = 0; hop < 20; hop += 1) {
    const res = await request(url);
    if (res.status >= 300 && res.status < 400) {
      url = new URL(res.location, url).toString();
      if (new URL(url).host !== targetOrigin) sawProvider = true;
      continue;
    }
    const body = res.text;
    const action = /action="([^"]+)"/.exec(body);
    if (res.status === 200 && action && new URL(url).host !== targetOrigin) {
      const post = new URL(action[1].replaceAll('&amp;', '&'), url).toString();
      const form = await request(post, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: 'login=alice&password=secret',
      });
      if (!form.location) throw new Error(`login form answered ${form.status}`);
      url = new URL(form.location, post).toString();
      continue;
    }
    if (!sawProvider) throw new Error(`never reached the provider (${res.status} at ${url})`);
    return cookieHeader(startUrl);
  }
  throw new Error('too many redirects');
}

if (count > 0) {
  const t0 = process.hrtime.bigint();
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next += 1;
      const cookie = await login(start);
      if (!cookie) throw new Error('a login set no cookie');
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(JSON.stringify({ logins: count, seconds, per_second: count / seconds }));
} else {
  const cookie = await login(start);
  if (!cookie) {
    console.error('the login set no cookie');
    process.exit(1);
  }
  console.log(cookie);
}

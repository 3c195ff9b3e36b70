// Sallyport in a real browser: the system Chromium, driven by playwright-core, against the real
// test OpenID provider, the gateway binary serving the demo SPA, and a recording upstream.
// One stack for the whole file; every test gets a fresh browser context (its own cookies).
//
//   npm ci && npm test          (in tests/e2e; needs `cargo build` first)

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import {
  JWT_RE, WAIT_MS, emptyOrHidden, fingerprint, launchBrowser, signIn, signedInPage, sleep,
  startStack, text, waitForStatus, waitUntil,
} from './harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = path.join(HERE, 'artifacts');
const PLAYWRIGHT_VERSION = createRequire(import.meta.url)('playwright-core/package.json').version;
const TEST = { timeout: 60_000 };

let stack;
let browser;

before(async () => {
  browser = await launchBrowser();
  console.log(`# Chromium ${browser.version()} (${process.env.CHROMIUM || '/usr/bin/chromium'}), playwright-core ${PLAYWRIGHT_VERSION}`);
  stack = await startStack();
  console.log(`# gateway ${stack.gw} (SPA ${stack.spaDir}), provider ${stack.issuer}, upstream ${stack.echo.url}, `
    + `dev origin ${stack.devOrigin}, attacker ${stack.attackerOrigin}`);
}, { timeout: 600_000 }); // may run `npm ci` for the provider and build the SPA once

after(async () => {
  await browser?.close().catch(() => {});
  await stack?.stop();
});

/**
 * Runs `fn` with a fresh browser context; on failure, saves a screenshot of each of its pages to
 * artifacts/ and adds the pages' URLs and the servers' last log lines to the error.
 */
async function withContext(t, fn) {
  const context = await browser.newContext();
  try {
    await fn(context);
  } catch (err) {
    const slug = t.name.replace(/[^a-z0-9]+/gi, '-').slice(0, 60);
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    const pages = context.pages();
    for (const [i, p] of pages.entries()) {
      await p.screenshot({ path: path.join(ARTIFACTS, `${slug}-${i}.png`), timeout: 5_000 }).catch(() => {});
    }
    err.message += `\n--- pages: ${pages.map((p) => p.url()).join(' , ') || 'none'}`
      + ` (screenshots in ${ARTIFACTS})\n--- server logs:\n${stack?.logs?.() ?? ''}`;
    throw err;
  } finally {
    await context.close().catch(() => {});
  }
}

/** What page JavaScript can read: both storages, the DOM, document.cookie. */
function readable(page) {
  return page.evaluate(() => {
    const dump = (s) => {
      const o = {};
      for (let i = 0; i < s.length; i += 1) o[s.key(i)] = s.getItem(s.key(i));
      return JSON.stringify(o);
    };
    return {
      localStorage: dump(localStorage),
      sessionStorage: dump(sessionStorage),
      outerHTML: document.documentElement.outerHTML,
      cookie: document.cookie,
    };
  });
}

function assertNoSecrets(where, values, tokens) {
  for (const [name, value] of Object.entries(values)) {
    for (const token of tokens) {
      assert.ok(!value.includes(token), `${where}: ${name} contains the access token`);
    }
    const jwt = value.match(JWT_RE);
    assert.equal(jwt, null, `${where}: ${name} contains a JWT-looking string ${jwt?.[0]?.slice(0, 24)}…`);
  }
}

/** Waits until `page` stays on one URL with a complete document (redirects done). */
async function settle(page) {
  let last = '';
  await waitUntil(async () => {
    const now = `${page.url()} ${await page.evaluate(() => document.readyState)}`;
    const stable = now === last && now.endsWith(' complete');
    last = now;
    return stable;
  }, { interval: 300, message: () => `${page.url()} to settle` });
}

/** Signs out through the SPA and the provider's end-session page; returns that page's URL. */
async function signOut(page) {
  await page.click('#logout');
  await page.waitForURL((url) => url.href.startsWith(`${stack.issuer}/`), { timeout: WAIT_MS });
  const providerUrl = page.url();
  // The provider asks for confirmation (#logout-confirm), then sends the browser back.
  const confirm = await page.waitForSelector('#logout-confirm', { timeout: 5_000 }).catch(() => null);
  if (confirm) {
    await Promise.all([
      page.waitForURL((url) => url.href.startsWith(`${stack.gw}/`), { timeout: WAIT_MS }),
      confirm.click(),
    ]);
  } else {
    await page.waitForURL((url) => url.href.startsWith(`${stack.gw}/`), { timeout: WAIT_MS });
  }
  await waitForStatus(page, 'Signed out');
  return providerUrl;
}

// ---------------------------------------------------------------------------------------------

test('signs in through the real provider login form and lands signed in', TEST, (t) => withContext(t, async (context) => {
  const page = await context.newPage();
  await page.goto(`${stack.gw}/`);
  await waitForStatus(page, 'Signed out');
  assert.ok(await page.isVisible('#login'), '#login is shown when signed out');

  await signIn(page, stack);

  assert.equal(await text(page, '#status'), 'Signed in');
  assert.equal(await text(page, '#user-name'), 'Alice Example');
  assert.match(await text(page, '#claims'), /alice@example\.com/);
  assert.ok(!(await page.isVisible('#login')), '#login is hidden when signed in');
}));

test('a deep link (path, query and hash) survives the login round trip', TEST, (t) => withContext(t, async (context) => {
  const deep = '/orders/42?tab=items#notes';
  const page = await context.newPage();
  const res = await page.goto(`${stack.gw}${deep}`);
  assert.equal(res.status(), 200, 'the SPA fallback serves index.html for a client-side route');
  await waitForStatus(page, 'Signed out');
  assert.equal(await text(page, '#path'), deep);

  await signIn(page, stack);

  assert.equal(page.url(), `${stack.gw}${deep}`);
  assert.equal(await text(page, '#path'), deep);
  assert.equal(await text(page, '#user-name'), 'Alice Example');
}));

test('the session cookie is HttpOnly and SameSite=Lax, invisible to document.cookie', TEST, (t) => withContext(t, async (context) => {
  const page = await signedInPage(context, stack);

  const documentCookie = await page.evaluate(() => document.cookie);
  assert.ok(!documentCookie.includes('sallyport'), `document.cookie shows a Sallyport cookie: ${documentCookie}`);

  const cookies = await context.cookies(stack.gw);
  const session = cookies.find((c) => c.name === 'sallyport');
  assert.ok(session, `no "sallyport" cookie in ${JSON.stringify(cookies.map((c) => c.name))}`);
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, 'Lax');
  assert.equal(session.path, '/');
  assert.match(session.value, /^[A-Za-z0-9_-]{20,}$/, 'the cookie is an opaque id');
  for (const c of cookies.filter((x) => x.name.startsWith('sallyport'))) {
    assert.equal(c.httpOnly, true, `${c.name} is HttpOnly`);
  }
}));

test('no token reaches anything the browser receives or the page can read (login, API call, logout)', TEST, (t) => withContext(t, async (context) => {
  const since = Date.now();
  const seen = [];
  const pending = [];
  context.on('response', (res) => {
    const entry = { url: res.url(), status: res.status(), headers: '', body: '' };
    seen.push(entry);
    pending.push((async () => {
      entry.headers = JSON.stringify(await res.allHeaders().catch(() => res.headers()));
      const body = await Promise.race([res.body(), sleep(5_000).then(() => { throw new Error('timeout'); })])
        .catch((err) => { entry.bodyError = err.message; return null; });
      entry.body = body ? body.toString('latin1') : '';
    })());
  });

  const page = await signedInPage(context, stack);
  const afterLogin = await readable(page);
  await page.click('#call-api');
  await waitUntil(async () => (await text(page, '#api-result'))?.includes('/echo/hello'), { message: '#api-result' });
  const afterApi = await readable(page);
  const providerUrl = await signOut(page);
  const afterLogout = await readable(page);
  await Promise.all(pending);

  const tokens = stack.echo.tokens(since);
  assert.ok(tokens.length >= 1, 'the upstream received the bearer token');
  t.diagnostic(`${seen.length} responses recorded, ${seen.filter((e) => e.bodyError).length} without a readable body `
    + `(redirects and the like); ${tokens.length} access token(s) captured at the upstream`);

  // The recording saw redirects (headers) and bodies.
  assert.ok(seen.some((e) => e.url.startsWith(`${stack.gw}/auth/callback`) && e.status >= 300 && e.status < 400 && e.headers.includes('location')),
    'the callback redirect was recorded with its headers');
  assert.ok(seen.some((e) => e.url.startsWith(`${stack.gw}/api/echo/hello`) && e.body.includes('redacted')),
    'the API response body was recorded');

  for (const e of seen) {
    for (const token of tokens) {
      assert.ok(!e.url.includes(token), `the URL ${e.url} contains the access token`);
      assert.ok(!e.headers.includes(token), `the headers of ${e.status} ${e.url} contain the access token`);
      assert.ok(!e.body.includes(token), `the body of ${e.status} ${e.url} contains the access token`);
    }
    // No body holds a JWT: not even the logout answer page JavaScript reads, whose
    // redirect_to is a Sallyport URL. The only JWT the browser sees is the ID token as
    // `id_token_hint` (OIDC RP-Initiated Logout), in the 303 of /auth/logout/continue and in
    // the provider's end-session URL it leads to, after the session is gone.
    assert.equal(e.body.match(JWT_RE), null, `the body of ${e.status} ${e.url} carries a JWT`);
    const hintAllowed = [
      [e.headers, e.url.startsWith(`${stack.gw}/auth/logout/continue`) && e.status === 303],
      [e.url, e.url.startsWith(`${stack.issuer}/session/end`)],
    ];
    for (const [part, allowed] of hintAllowed) {
      for (const m of part.matchAll(JWT_RE)) {
        const before = part.slice(Math.max(0, m.index - 'id_token_hint='.length), m.index);
        assert.ok(allowed && before === 'id_token_hint=', `${e.status} ${e.url} carries a JWT outside an end-session id_token_hint`);
      }
    }
  }
  if (providerUrl.includes('id_token_hint=')) {
    t.diagnostic('note: the ID token travels through the browser as id_token_hint of the end-session URL (logout only)');
  }

  for (const [where, values] of [['after login', afterLogin], ['after the API call', afterApi], ['after logout', afterLogout]]) {
    assertNoSecrets(where, values, tokens);
  }
  for (const c of await context.cookies()) {
    assertNoSecrets(`cookie ${c.name}`, { value: c.value }, tokens);
  }
}));

test('brokered tokens (an exchange, the gateway\'s client credentials) stay on the server too', TEST, (t) => withContext(t, async (context) => {
  const since = Date.now();
  const seen = [];
  const pending = [];
  context.on('response', (res) => {
    const entry = { url: res.url(), headers: '', body: '' };
    seen.push(entry);
    pending.push((async () => {
      entry.headers = JSON.stringify(await res.allHeaders().catch(() => res.headers()));
      const body = await res.body().catch(() => null);
      entry.body = body ? body.toString('latin1') : '';
    })());
  });
  const page = await signedInPage(context, stack);
  // Page JavaScript calls both services, as an XSS would, and keeps whatever it can read.
  const read = await page.evaluate(async () => {
    const out = [];
    for (const path of ['/api/billing/invoices', '/api/reports/daily', '/api/auth/session']) {
      const res = await fetch(path, { credentials: 'include' });
      out.push({ path, status: res.status, headers: JSON.stringify([...res.headers]), body: await res.text() });
    }
    return out;
  });
  await Promise.all(pending);
  for (const r of read.slice(0, 2)) assert.equal(r.status, 200, `${r.path}: ${r.body}`);

  const byPath = (prefix) => stack.echo.requests.filter((r) => r.at >= since && r.path.startsWith(prefix));
  const [billing] = byPath('/billing/');
  const [reports] = byPath('/reports/');
  assert.ok(billing?.authorization && reports?.authorization, 'both services received a bearer');
  const exchanged = billing.authorization.slice('Bearer '.length);
  const own = reports.authorization.slice('Bearer '.length);
  const userTokens = stack.echo.tokens(0).filter((tk) => tk !== exchanged && tk !== own);
  assert.notEqual(exchanged, own);
  const claims = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));
  assert.equal(claims(exchanged).aud, 'billing-api');
  assert.equal(claims(exchanged).sub, 'alice');
  assert.equal(claims(own).client_id, 'sallyport');
  assert.ok(!userTokens.includes(exchanged), 'the exchange service did not get the user\'s token');

  const tokens = [exchanged, own];
  for (const r of read) assertNoSecrets(`fetch ${r.path}`, { headers: r.headers, body: r.body }, tokens);
  for (const e of seen) assertNoSecrets(`response ${e.url}`, { url: e.url, headers: e.headers, body: e.body }, tokens);
  assertNoSecrets('the page', await readable(page), tokens);
  for (const c of await context.cookies()) assertNoSecrets(`cookie ${c.name}`, { value: c.value }, tokens);
  assert.ok(read[0].body.includes(fingerprint(exchanged)), 'the page sees the exchanged token only as its fingerprint');
}));

test('the API call reaches the upstream with a bearer token the page only sees redacted', TEST, (t) => withContext(t, async (context) => {
  const since = Date.now();
  const page = await signedInPage(context, stack);
  await page.click('#call-api');
  await waitUntil(async () => (await text(page, '#api-result'))?.includes('/echo/hello'), { message: '#api-result to show /echo/hello' });
  const shown = await text(page, '#api-result');

  let authorization;
  let parsed;
  try {
    parsed = JSON.parse(shown);
  } catch {
    parsed = undefined;
  }
  if (parsed && typeof parsed === 'object' && parsed.path) {
    assert.equal(parsed.path, '/echo/hello');
    assert.equal(typeof parsed.query === 'string' ? parsed.query.replace(/^\?/, '') : parsed.query.from, typeof parsed.query === 'string' ? 'from=spa' : 'spa');
    authorization = parsed.headers?.authorization;
    assert.ok(authorization, '#api-result shows the authorization header');
  } else {
    assert.match(shown, /\/echo\/hello/);
    assert.match(shown, /from=spa|"from"\s*:\s*"spa"/);
    authorization = shown;
  }
  assert.match(authorization, /redacted/);
  assert.match(authorization, /sha256/);

  const received = stack.echo.requests.filter((r) => r.at >= since && r.path === '/echo/hello' && r.query.from === 'spa');
  assert.equal(received.length, 1, 'the upstream received exactly one GET /echo/hello?from=spa');
  const [req] = received;
  assert.equal(req.method, 'GET');
  assert.match(req.authorization ?? '', /^Bearer \S+$/);
  assert.ok(!req.authorization.includes('redacted'));
  const token = req.authorization.slice('Bearer '.length);
  assert.ok(shown.includes(fingerprint(token)), 'the redacted fingerprint is that of the token the upstream got');
  assert.ok(!shown.includes(token), 'the page does not show the token itself');
  assert.equal(req.headers['x-auth-request-user'], 'alice');
  assert.equal(req.headers.cookie, undefined, 'the session cookie is not forwarded upstream');
}));

test('logout ends the session at the gateway and the provider; the back button shows no user data', TEST, (t) => withContext(t, async (context) => {
  await context.addInitScript(() => {
    window.__pageshows = [];
    addEventListener('pageshow', (e) => window.__pageshows.push(e.persisted));
  });
  const page = await signedInPage(context, stack);
  const oldCookie = (await context.cookies(stack.gw)).find((c) => c.name === 'sallyport');

  const providerUrl = await signOut(page);
  assert.ok(providerUrl.startsWith(`${stack.issuer}/session/end`), `went through the provider's end-session page (${providerUrl})`);
  assert.equal(new URL(page.url()).origin, stack.gw);
  assert.ok(await emptyOrHidden(page, '#user-name'));
  assert.ok(await emptyOrHidden(page, '#claims'));

  const status = await page.evaluate(async () => (await fetch('/api/auth/session', { headers: { Accept: 'application/json' } })).status);
  assert.equal(status, 401, 'GET /api/auth/session after logout');
  assert.ok(!(await context.cookies(stack.gw)).some((c) => c.name === 'sallyport' && c.value), 'the session cookie is cleared');

  // Replaying the old cookie does not bring the session back.
  assert.ok(oldCookie, 'had a session cookie');
  const replay = await fetch(`http://127.0.0.1:${stack.gwPort}/api/auth/session`, { headers: { cookie: `sallyport=${oldCookie.value}` } });
  assert.equal(replay.status, 401, 'the old session cookie is dead');

  // Back: the provider's end-session page, then the page that showed Alice.
  const userData = [];
  page.on('response', (res) => {
    if (res.url().startsWith(`${stack.gw}/`)) {
      userData.push(res.text().then((b) => (/Alice Example|alice@example\.com/.test(b) ? res.url() : null)).catch(() => null));
    }
  });
  let gatewayStops = 0;
  for (let i = 1; i <= 2; i += 1) {
    // 'commit', not 'load': the provider's end-session page, shown again without a session,
    // moves on by itself before it ever fires load.
    // A page restored from the back/forward cache fires no load either: wait until the URL
    // stays put and the document is complete.
    await page.goBack({ waitUntil: 'commit', timeout: WAIT_MS }).catch(() => null);
    await settle(page);
    const url = page.url();
    if (!url.startsWith(`${stack.gw}/`)) {
      t.diagnostic(`back #${i}: ${url}`);
      continue;
    }
    gatewayStops += 1;
    await waitForStatus(page, 'Signed out');
    await sleep(500); // let the page settle, then look again
    assert.equal(await text(page, '#status'), 'Signed out', `back #${i} settles signed out`);
    assert.ok(await emptyOrHidden(page, '#user-name'), `back #${i}: #user-name is empty or hidden`);
    assert.ok(await emptyOrHidden(page, '#claims'), `back #${i}: #claims is empty or hidden`);
    const shows = await page.evaluate(() => window.__pageshows ?? []);
    t.diagnostic(`back #${i}: ${url} (pageshow persisted: ${JSON.stringify(shows)}${shows.includes(true) ? ', restored from the back/forward cache' : ''})`);
  }
  assert.ok(gatewayStops >= 1, 'going back reached a gateway page');
  const leaks = (await Promise.all(userData)).filter(Boolean);
  assert.deepEqual(leaks, [], 'no gateway response during back navigation carries user data');
}));

test('a second tab in the same browser shares the session without logging in again', TEST, (t) => withContext(t, async (context) => {
  await signedInPage(context, stack);
  const tab = await context.newPage();
  const visited = [];
  tab.on('framenavigated', (frame) => {
    if (frame === tab.mainFrame()) visited.push(frame.url());
  });
  await tab.goto(`${stack.gw}/`);
  await waitForStatus(tab, 'Signed in');
  assert.equal(await text(tab, '#user-name'), 'Alice Example');
  assert.ok(visited.every((u) => u.startsWith(`${stack.gw}/`)), `the tab never left the gateway: ${visited.join(' , ')}`);
}));

test('a cross-site form POST to an API route is refused and never reaches the upstream', TEST, (t) => withContext(t, async (context) => {
  const since = Date.now();
  await signedInPage(context, stack);
  const evil = await context.newPage();
  const target = `${stack.gw}/api/echo/transfer`;
  const responses = [];
  evil.on('response', (res) => {
    if (res.url() === target) responses.push({ status: res.status(), method: res.request().method() });
  });
  await evil.goto(`${stack.attackerOrigin}/`);
  await waitUntil(() => responses.length > 0, { message: `the auto-submitted POST to ${target}` });
  const [res] = responses;
  assert.equal(res.method, 'POST');
  assert.ok([401, 403].includes(res.status), `status ${res.status}`);
  await sleep(300);
  const reached = stack.echo.requests.filter((r) => r.at >= since && r.path === '/echo/transfer');
  assert.deepEqual(reached, [], 'the upstream never saw /echo/transfer');
}));

/** Runs a fetch in the page; returns {status, body, headers} or {error: 'TypeError: …'}. */
function pageFetch(page, url, init) {
  return page.evaluate(async ({ url, init }) => {
    try {
      const res = await fetch(url, init);
      const raw = await res.text();
      let body = raw;
      try {
        body = JSON.parse(raw);
      } catch {
        // not JSON
      }
      return { status: res.status, body };
    } catch (err) {
      return { error: `${err.name}: ${err.message}` };
    }
  }, { url, init });
}

test('two-origin dev mode: CORS allows the configured dev origin and refuses others', TEST, (t) => withContext(t, async (context) => {
  const since = Date.now();
  await signedInPage(context, stack);

  // The allowed dev origin (same site as the gateway, so the Lax cookie goes along).
  const dev = await context.newPage();
  const cdp = await context.newCDPSession(dev);
  const preflights = new Map();
  cdp.on('Network.requestWillBeSent', (e) => {
    if (e.request.method === 'OPTIONS') preflights.set(e.requestId, { url: e.request.url, status: undefined });
  });
  cdp.on('Network.responseReceived', (e) => {
    if (preflights.has(e.requestId)) preflights.get(e.requestId).status = e.response.status;
  });
  await cdp.send('Network.enable');
  await dev.goto(`${stack.devOrigin}/`);

  const session = await pageFetch(dev, `${stack.gw}/api/auth/session`, { credentials: 'include' });
  assert.equal(session.error, undefined, `credentialed GET /api/auth/session from ${stack.devOrigin} failed: ${session.error}`);
  assert.equal(session.status, 200);
  assert.equal(session.body.authenticated, true);
  assert.equal(session.body.user?.name, 'Alice Example');
  assert.equal(typeof session.body.csrf_token, 'string');

  const post = await pageFetch(dev, `${stack.gw}/api/echo/x`, {
    method: 'POST',
    credentials: 'include',
    headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': session.body.csrf_token },
    body: JSON.stringify({ from: 'dev' }),
  });
  assert.equal(post.error, undefined, `preflighted POST /api/echo/x from ${stack.devOrigin} failed: ${post.error}`);
  assert.equal(post.status, 200);
  assert.equal(post.body.path, '/echo/x');
  const reached = stack.echo.requests.filter((r) => r.at >= since && r.path === '/echo/x');
  assert.equal(reached.length, 1, 'the POST reached the upstream once');
  assert.equal(reached[0].method, 'POST');
  assert.equal(reached[0].body, JSON.stringify({ from: 'dev' }));
  const seenPreflights = [...preflights.values()].filter((p) => p.url === `${stack.gw}/api/echo/x`);
  t.diagnostic(`preflights seen through CDP: ${JSON.stringify(seenPreflights)}`);
  for (const p of seenPreflights) assert.ok(p.status >= 200 && p.status < 300, `preflight answered ${p.status}`);

  // A not-allowed origin (another site): the same credentialed calls fail as CORS errors.
  const other = await context.newPage();
  await other.goto(`${stack.attackerOrigin}/blank`);
  const denied = await pageFetch(other, `${stack.gw}/api/auth/session`, { credentials: 'include' });
  assert.match(denied.error ?? `no error (status ${denied.status})`, /^TypeError/);
  const deniedPost = await pageFetch(other, `${stack.gw}/api/echo/x`, {
    method: 'POST',
    credentials: 'include',
    headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': session.body.csrf_token },
    body: JSON.stringify({ from: 'attacker' }),
  });
  assert.match(deniedPost.error ?? `no error (status ${deniedPost.status})`, /^TypeError/);
  await sleep(300);
  assert.equal(stack.echo.requests.filter((r) => r.at >= since && r.path === '/echo/x').length, 1,
    'the not-allowed origin\'s POST never reached the upstream');
}));

// ---------------------------------------------------------------------------------------------
// Per-route authorization: /api/orders/{id}/* is checked against examples/demo/policies.cedar by
// the embedded Cedar engine; the SPA asks `can('delete', order 42)` to show its delete button.

const ORDER_DENIED = 'Only administrators may delete orders';

/** Records every response `context` receives (URL, method, status, headers, body). */
function recordResponses(context) {
  const seen = [];
  const pending = [];
  context.on('response', (res) => {
    const entry = { url: res.url(), method: res.request().method(), status: res.status(), headers: '', body: '' };
    seen.push(entry);
    pending.push((async () => {
      entry.headers = JSON.stringify(await res.allHeaders().catch(() => res.headers()));
      const body = await Promise.race([res.body(), sleep(5_000).then(() => { throw new Error('timeout'); })])
        .catch(() => null);
      entry.body = body ? body.toString('latin1') : '';
    })());
  });
  return { seen, settled: () => Promise.all(pending) };
}

/** No access token the upstream got since `since`, nor any JWT, in what the browser received or the page can read. */
async function assertNoTokenInBrowser(t, { page, context, recorded, since }) {
  await recorded.settled();
  const tokens = stack.echo.tokens(since);
  assert.ok(tokens.length >= 1, 'the upstream received a bearer token to look for');
  t.diagnostic(`${recorded.seen.length} responses checked for ${tokens.length} access token(s)`);
  for (const e of recorded.seen) {
    assertNoSecrets(`${e.method} ${e.url} (${e.status})`, { url: e.url, headers: e.headers, body: e.body }, tokens);
  }
  assertNoSecrets('the page', await readable(page), tokens);
  for (const c of await context.cookies()) assertNoSecrets(`cookie ${c.name}`, { value: c.value }, tokens);
}

/** Waits until the SPA has the answer to `can('delete', order 42)`; returns `data-can-delete`. */
async function canDeleteAnswer(page) {
  let state;
  await waitUntil(async () => {
    state = await page.getAttribute('#order', 'data-can-delete');
    return state !== null && state !== 'unknown';
  }, { message: async () => `#order[data-can-delete] to be answered (is ${JSON.stringify(state)}, #error ${JSON.stringify(await text(page, '#error'))})` });
  return state;
}

/** The decision of the SPA's `POST /api/auth/evaluations` for deleting order 42, as the browser received it. */
async function recordedDecision(recorded) {
  await recorded.settled();
  const answers = recorded.seen.filter((e) => e.method === 'POST' && e.url === `${stack.gw}/api/auth/evaluations`);
  assert.equal(answers.length, 1, 'the SPA asked the gateway once');
  assert.equal(answers[0].status, 200);
  const { evaluations } = JSON.parse(answers[0].body);
  assert.equal(evaluations.length, 1);
  return evaluations[0];
}

/**
 * Clicks `#<button>` (as a user would, or `byScript`, which clicks a hidden one too) and waits
 * until `#order-status` shows the answer to `request`.
 */
async function orderAction(page, button, request, { byScript = false } = {}) {
  if (byScript) await page.evaluate((id) => document.getElementById(id).click(), button);
  else await page.click(`#${button}`);
  await waitUntil(async () => (await text(page, '#order-request')) === request && /HTTP \d{3}|failed/.test(await text(page, '#order-status')), {
    message: async () => `#order-status after ${request} (is ${JSON.stringify(await text(page, '#order-status'))}, #error ${JSON.stringify(await text(page, '#error'))})`,
  });
  return { status: await text(page, '#order-status'), result: await text(page, '#order-result') };
}

test('authorization: an admin sees "Delete order 42", and the delete reaches the upstream', TEST, (t) => withContext(t, async (context) => {
  const since = Date.now();
  const recorded = recordResponses(context);
  const page = await signedInPage(context, stack); // alice: roles [admin, billing]

  await page.waitForSelector('#order-delete', { state: 'visible', timeout: WAIT_MS });
  assert.equal(await page.getAttribute('#order', 'data-can-delete'), 'true');
  assert.equal((await recordedDecision(recorded)).decision, true);

  const deleted = await orderAction(page, 'order-delete', 'DELETE /api/orders/42/x');
  assert.equal(deleted.status, '→ HTTP 200');
  const shown = JSON.parse(deleted.result);
  assert.equal(shown.method, 'DELETE');
  assert.equal(shown.path, '/echo/orders/42/x');
  assert.match(shown.headers.authorization, /redacted/);
  assert.ok(await emptyOrHidden(page, '#error'), '#error stays empty');

  const reached = stack.echo.requests.filter((r) => r.at >= since && r.path === '/echo/orders/42/x');
  assert.equal(reached.length, 1, 'the upstream received one DELETE /echo/orders/42/x');
  assert.equal(reached[0].method, 'DELETE');
  assert.match(reached[0].authorization ?? '', /^Bearer \S+$/);
  assert.equal(reached[0].headers['x-auth-request-user'], 'alice');

  const loaded = await orderAction(page, 'order-load', 'GET /api/orders/42/details');
  assert.equal(loaded.status, '→ HTTP 200');
  assert.equal(JSON.parse(loaded.result).path, '/echo/orders/42/details');

  await assertNoTokenInBrowser(t, { page, context, recorded, since });
}));

test('authorization: a viewer never sees "Delete order 42", and a DELETE sent anyway gets 403 with the policy\'s reason', TEST, (t) => withContext(t, async (context) => {
  const since = Date.now();
  const recorded = recordResponses(context);
  const page = await signedInPage(context, stack, { user: 'bob' }); // bob: roles [viewer]

  assert.equal(await canDeleteAnswer(page), 'false');
  assert.ok(!(await page.isVisible('#order-delete')), '#order-delete is hidden');
  assert.ok(await page.isVisible('#order-load'), '#order-load is shown');
  assert.ok(await emptyOrHidden(page, '#error'), '#error stays empty');
  const decision = await recordedDecision(recorded);
  assert.equal(decision.decision, false);
  assert.equal(decision.context?.reason_user, ORDER_DENIED);

  // Reading is allowed to everyone logged in.
  const loaded = await orderAction(page, 'order-load', 'GET /api/orders/42/details');
  assert.equal(loaded.status, '→ HTTP 200');
  assert.equal(JSON.parse(loaded.result).path, '/echo/orders/42/details');

  // Page JavaScript deletes anyway, with a valid CSRF token: the gateway refuses.
  const session = await pageFetch(page, '/api/auth/session', { headers: { Accept: 'application/json' } });
  assert.equal(session.status, 200);
  const raw = await pageFetch(page, '/api/orders/42/x', {
    method: 'DELETE',
    headers: { Accept: 'application/json', 'X-CSRF-Token': session.body.csrf_token },
  });
  assert.equal(raw.status, 403, JSON.stringify(raw));
  assert.equal(raw.body.error, 'access_denied');
  assert.equal(raw.body.reason_user, ORDER_DENIED);

  // The hidden button, clicked by script: the page shows the reason, not an error.
  const deleted = await orderAction(page, 'order-delete', 'DELETE /api/orders/42/x', { byScript: true });
  assert.equal(deleted.status, '→ HTTP 403 access_denied');
  assert.equal(deleted.result, ORDER_DENIED);
  assert.ok(await emptyOrHidden(page, '#error'), '#error stays empty');

  await sleep(300);
  const reached = stack.echo.requests.filter((r) => r.at >= since && r.path.startsWith('/echo/orders/42/x'));
  assert.deepEqual(reached, [], 'no DELETE reached the upstream');
  const details = stack.echo.requests.filter((r) => r.at >= since && r.path === '/echo/orders/42/details');
  assert.equal(details.length, 1);
  assert.equal(details[0].headers['x-auth-request-user'], 'bob');

  await assertNoTokenInBrowser(t, { page, context, recorded, since });
}));

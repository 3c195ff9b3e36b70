// Unit tests for @sallyport/client, run on the built dist/ with node's test runner.
// Every test injects a fake fetch and a fake location: no network, no browser.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import * as client from '../dist/index.js';
import { SallyportError, createClient } from '../dist/index.js';

const PAGE = 'http://localhost:8080';
const TOKEN = 'csrf-token-1';

const json = (status, body, headers = {}) =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json', ...headers } });

const loggedIn = (token = TOKEN) =>
  json(200, {
    authenticated: true,
    user: { sub: 'u-1', name: 'Ada Lovelace', email: 'ada@example.com', preferred_username: 'ada', groups: ['a'] },
    expires_at: 1_900_000_000,
    csrf_token: token,
  });

const loggedOut = () => json(401, { authenticated: false, login_url: '/auth/login' });

/** A fake fetch: `routes` answers each call; `calls` records what was sent. */
function fakeFetch(routes) {
  const calls = [];
  const f = async (input, init = {}) => {
    const isReq = input instanceof Request;
    const url = isReq ? input.url : String(input);
    const method = (init.method ?? (isReq ? input.method : 'GET')).toUpperCase();
    const headers = new Headers(init.headers ?? (isReq ? input.headers : undefined));
    const call = { url, method, headers, credentials: init.credentials, init, input };
    calls.push(call);
    return routes(call, calls);
  };
  f.calls = calls;
  return f;
}

/** A fake location at `href` that records navigations. */
function fakeLocation(href = `${PAGE}/orders/42?tab=items#notes`) {
  const u = new URL(href);
  return {
    href: u.href,
    pathname: u.pathname,
    search: u.search,
    hash: u.hash,
    assigned: [],
    assign(url) {
      this.assigned.push(url);
    },
  };
}

/** Resolves to 'pending' if `promise` has not settled after a few turns of the event loop. */
async function settledState(promise) {
  const marker = Symbol('pending');
  const result = await Promise.race([
    promise.then(
      () => 'resolved',
      () => 'rejected',
    ),
    new Promise((r) => setTimeout(() => r(marker), 30)),
  ]);
  return result === marker ? 'pending' : result;
}

/** A fake backend: the session endpoint plus `api` for everything else. */
function backend(api, { session = () => loggedIn() } = {}) {
  return fakeFetch((call, calls) => {
    if (call.url.endsWith('/api/auth/session')) return session(call, calls);
    return api(call, calls);
  });
}

const echo = () => json(200, { ok: true });
const sessionCalls = (f) => f.calls.filter((c) => c.url.endsWith('/api/auth/session')).length;

describe('getSession', () => {
  it('parses a logged-in session and asks for JSON with the cookie', async () => {
    const fetch = backend(echo);
    const sp = createClient({ fetch, location: fakeLocation() });
    const s = await sp.getSession();
    assert.equal(s.authenticated, true);
    assert.equal(s.user.name, 'Ada Lovelace');
    assert.equal(s.user.sub, 'u-1');
    assert.deepEqual(s.user.groups, ['a']);
    assert.equal(s.expires_at, 1_900_000_000);
    assert.equal(s.csrf_token, TOKEN);
    assert.equal(fetch.calls[0].url, '/api/auth/session');
    assert.equal(fetch.calls[0].method, 'GET');
    assert.equal(fetch.calls[0].credentials, 'same-origin');
    assert.equal(fetch.calls[0].headers.get('accept'), 'application/json');
  });

  it('parses a logged-out session (401)', async () => {
    const sp = createClient({ fetch: backend(echo, { session: loggedOut }), location: fakeLocation() });
    assert.deepEqual(await sp.getSession(), { authenticated: false, login_url: '/auth/login' });
  });

  it('treats a 401 error body as logged out, with the default login URL', async () => {
    const session = () => json(401, { error: 'session_expired', message: 'ended', correlation_id: 'c-1' });
    const sp = createClient({ fetch: backend(echo, { session }), location: fakeLocation() });
    assert.deepEqual(await sp.getSession(), { authenticated: false, login_url: '/auth/login' });
  });

  it('throws a SallyportError with code and correlation id on other statuses', async () => {
    const session = () =>
      json(503, { error: 'store_unavailable', message: 'the session store is unavailable', correlation_id: 'corr-503' });
    const sp = createClient({ fetch: backend(echo, { session }), location: fakeLocation() });
    await assert.rejects(sp.getSession(), (err) => {
      assert.ok(err instanceof SallyportError);
      assert.ok(err instanceof Error);
      assert.equal(err.name, 'SallyportError');
      assert.equal(err.status, 503);
      assert.equal(err.code, 'store_unavailable');
      assert.equal(err.correlationId, 'corr-503');
      assert.match(err.message, /503/);
      return true;
    });
  });

  it('takes the correlation id from the header when the body is not JSON', async () => {
    const session = () => new Response('bad gateway', { status: 502, headers: { 'X-Correlation-ID': 'corr-h' } });
    const sp = createClient({ fetch: backend(echo, { session }), location: fakeLocation() });
    await assert.rejects(sp.getSession(), { name: 'SallyportError', status: 502, code: 'http_502', correlationId: 'corr-h' });
  });

  it('turns a network error into a SallyportError', async () => {
    const cause = new TypeError('fetch failed');
    const fetch = async () => {
      throw cause;
    };
    const sp = createClient({ fetch, location: fakeLocation() });
    await assert.rejects(sp.getSession(), (err) => {
      assert.ok(err instanceof SallyportError);
      assert.equal(err.status, 0);
      assert.equal(err.code, 'network_error');
      assert.equal(err.correlationId, undefined);
      assert.equal(err.cause, cause);
      return true;
    });
  });

  it('rejects a 200 that is not a session', async () => {
    const session = () => json(200, { authenticated: true, user: { sub: 'u' } });
    const sp = createClient({ fetch: backend(echo, { session }), location: fakeLocation() });
    await assert.rejects(sp.getSession(), { name: 'SallyportError', code: 'invalid_response' });
  });
});

describe('fetch: CSRF', () => {
  it('adds no CSRF header to safe methods and does not fetch the session for them', async () => {
    const fetch = backend(echo);
    const sp = createClient({ fetch, location: fakeLocation() });
    for (const method of [undefined, 'GET', 'HEAD', 'OPTIONS', 'get']) {
      const res = await sp.fetch('/api/echo/hello?from=spa', method ? { method } : undefined);
      assert.equal(res.status, 200);
    }
    assert.equal(sessionCalls(fetch), 0);
    for (const call of fetch.calls) {
      assert.equal(call.headers.has('x-csrf-token'), false);
      assert.equal(call.credentials, 'same-origin');
    }
  });

  it('adds the CSRF header to every unsafe method, fetching the token lazily once', async () => {
    const fetch = backend(echo);
    const sp = createClient({ fetch, location: fakeLocation() });
    for (const method of ['POST', 'PUT', 'PATCH', 'DELETE', 'post']) {
      await sp.fetch('/api/echo/x', { method, body: method === 'DELETE' ? undefined : '{}' });
    }
    assert.equal(sessionCalls(fetch), 1);
    const api = fetch.calls.filter((c) => c.url === '/api/echo/x');
    assert.equal(api.length, 5);
    for (const call of api) assert.equal(call.headers.get('X-CSRF-Token'), TOKEN);
    assert.deepEqual(
      api.map((c) => c.method),
      ['POST', 'PUT', 'PATCH', 'DELETE', 'POST'],
    );
  });

  it('reuses the token from getSession without asking again', async () => {
    const fetch = backend(echo);
    const sp = createClient({ fetch, location: fakeLocation() });
    await sp.getSession();
    await sp.fetch('/api/echo/x', { method: 'POST' });
    assert.equal(sessionCalls(fetch), 1);
    assert.equal(fetch.calls[1].headers.get('x-csrf-token'), TOKEN);
  });

  it('shares one session request between concurrent unsafe calls', async () => {
    const fetch = backend(echo);
    const sp = createClient({ fetch, location: fakeLocation() });
    await Promise.all([1, 2, 3].map(() => sp.fetch('/api/echo/x', { method: 'POST' })));
    assert.equal(sessionCalls(fetch), 1);
  });

  it('keeps the caller headers and uses a custom CSRF header name', async () => {
    const fetch = backend(echo);
    const sp = createClient({ fetch, location: fakeLocation(), csrfHeader: 'X-XSRF' });
    await sp.fetch('/api/echo/x', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' });
    const call = fetch.calls.at(-1);
    assert.equal(call.headers.get('x-xsrf'), TOKEN);
    assert.equal(call.headers.has('x-csrf-token'), false);
    assert.equal(call.headers.get('content-type'), 'application/json');
    assert.equal(call.init.body, '{}');
  });

  it('handles a Request object, taking its method', async () => {
    const fetch = backend(echo);
    const sp = createClient({ fetch, location: fakeLocation() });
    const req = new Request(`${PAGE}/api/echo/x`, { method: 'PUT', body: 'data', headers: { 'X-App': '1' } });
    await sp.fetch(req);
    const call = fetch.calls.at(-1);
    assert.equal(call.method, 'PUT');
    assert.equal(call.headers.get('x-csrf-token'), TOKEN);
    assert.equal(call.headers.get('x-app'), '1');
  });

  it('never sends the token to another origin, nor redirects on its 401', async () => {
    const fetch = backend(() => json(401, {}));
    const loc = fakeLocation();
    const sp = createClient({ fetch, location: loc });
    const res = await sp.fetch('https://api.other.example/things', { method: 'POST' });
    assert.equal(res.status, 401);
    assert.equal(fetch.calls.length, 1);
    assert.equal(fetch.calls[0].headers.has('x-csrf-token'), false);
    assert.deepEqual(loc.assigned, []);
  });

  it('retries once with a fresh token after 403 csrf_failed', async () => {
    let tokens = 0;
    const fetch = backend(
      (call) =>
        call.headers.get('x-csrf-token') === 'fresh'
          ? json(200, { ok: true })
          : json(403, { error: 'csrf_failed', message: 'the CSRF token is wrong', correlation_id: 'c' }),
      { session: () => loggedIn(++tokens === 1 ? 'stale' : 'fresh') },
    );
    const sp = createClient({ fetch, location: fakeLocation() });
    const res = await sp.fetch('/api/echo/x', { method: 'POST', body: 'b' });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { ok: true });
    assert.equal(sessionCalls(fetch), 2);
    const api = fetch.calls.filter((c) => c.url === '/api/echo/x');
    assert.deepEqual(
      api.map((c) => c.headers.get('x-csrf-token')),
      ['stale', 'fresh'],
    );
    assert.equal(api[1].init.body, 'b');
    // The fresh token is kept.
    await sp.fetch('/api/echo/x', { method: 'POST' });
    assert.equal(sessionCalls(fetch), 2);
  });

  it('retries only once: a second 403 csrf_failed is returned as is', async () => {
    const fetch = backend(() => json(403, { error: 'csrf_failed', message: 'wrong origin', correlation_id: 'c' }));
    const sp = createClient({ fetch, location: fakeLocation() });
    const res = await sp.fetch('/api/echo/x', { method: 'DELETE' });
    assert.equal(res.status, 403);
    assert.equal((await res.json()).error, 'csrf_failed');
    assert.equal(fetch.calls.filter((c) => c.url === '/api/echo/x').length, 2);
  });

  it('does not retry other 403s, and returns them with their body unread', async () => {
    const fetch = backend(() => json(403, { error: 'forbidden', message: 'no', correlation_id: 'c' }));
    const sp = createClient({ fetch, location: fakeLocation() });
    const res = await sp.fetch('/api/echo/x', { method: 'POST' });
    assert.equal(res.status, 403);
    assert.equal(res.bodyUsed, false);
    assert.equal((await res.json()).error, 'forbidden');
    assert.equal(fetch.calls.filter((c) => c.url === '/api/echo/x').length, 1);
  });

  it('returns other responses unchanged', async () => {
    const upstream = new Response('teapot', { status: 418 });
    const fetch = backend(() => upstream);
    const sp = createClient({ fetch, location: fakeLocation() });
    assert.equal(await sp.fetch('/api/echo/x'), upstream);
  });
});

describe('fetch: 401 and login', () => {
  it('turns a 401 into a redirect to the login with the exact return_to, and never settles', async () => {
    const fetch = backend(() => json(401, { error: 'session_expired', message: 'ended', correlation_id: 'c' }));
    const loc = fakeLocation(`${PAGE}/orders/42?tab=items&x=a b#notes`);
    const sp = createClient({ fetch, location: loc });
    const pending = sp.fetch('/api/echo/hello?from=spa');
    assert.equal(await settledState(pending), 'pending');
    // location.search is already percent-encoded (a%20b); return_to carries it encoded once more,
    // so Sallyport decodes it back to exactly the path the page had.
    assert.deepEqual(loc.assigned, ['/auth/login?return_to=%2Forders%2F42%3Ftab%3Ditems%26x%3Da%2520b%23notes']);
    const returnTo = new URL(loc.assigned[0], PAGE).searchParams.get('return_to');
    assert.equal(returnTo, '/orders/42?tab=items&x=a%20b#notes');
  });

  it('forgets the token after a 401', async () => {
    let n = 0;
    const fetch = backend(() => (++n === 2 ? json(401, { error: 'session_expired' }) : json(200, {})));
    const loc = fakeLocation();
    const sp = createClient({ fetch, location: loc });
    await sp.fetch('/api/echo/x', { method: 'POST' });
    void sp.fetch('/api/echo/x', { method: 'POST' });
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(loc.assigned.length, 1);
    await sp.fetch('/api/echo/x', { method: 'POST' });
    assert.equal(sessionCalls(fetch), 2);
  });

  it('redirects to the login when an unsafe call finds no session', async () => {
    const fetch = backend(echo, { session: loggedOut });
    const loc = fakeLocation(`${PAGE}/a?b=c`);
    const sp = createClient({ fetch, location: loc });
    const pending = sp.fetch('/api/echo/x', { method: 'POST' });
    assert.equal(await settledState(pending), 'pending');
    assert.deepEqual(loc.assigned, ['/auth/login?return_to=%2Fa%3Fb%3Dc']);
    assert.equal(fetch.calls.filter((c) => c.url === '/api/echo/x').length, 0);
  });

  it('login() defaults to the current path, search and hash', () => {
    const loc = fakeLocation(`${PAGE}/orders/42?tab=items#notes`);
    createClient({ fetch: backend(echo), location: loc }).login();
    assert.deepEqual(loc.assigned, ['/auth/login?return_to=%2Forders%2F42%3Ftab%3Ditems%23notes']);
  });

  it('login(returnTo) encodes the given path', () => {
    const loc = fakeLocation();
    createClient({ fetch: backend(echo), location: loc }).login('/x?y=1&z=2');
    assert.deepEqual(loc.assigned, ['/auth/login?return_to=%2Fx%3Fy%3D1%26z%3D2']);
  });

  it('login() without any location throws a SallyportError', () => {
    assert.throws(() => createClient({ fetch: backend(echo) }).login('/'), { name: 'SallyportError', code: 'no_location' });
  });
});

describe('fetch: step-up', () => {
  const stepUp = (loginUrl) =>
    json(401, { error: 'step_up_required', message: 'this needs a stronger or more recent login', login_url: loginUrl });

  it('navigates to the login_url Sallyport names, with the current page as return_to, and never settles', async () => {
    const fetch = backend(() => stepUp('/auth/login?acr_values=mfa&max_age=900'));
    const loc = fakeLocation(`${PAGE}/orders/42?tab=items#notes`);
    const sp = createClient({ fetch, location: loc });
    const pending = sp.fetch('/api/orders/42', { method: 'DELETE' });
    assert.equal(await settledState(pending), 'pending');
    assert.deepEqual(loc.assigned, ['/auth/login?acr_values=mfa&max_age=900&return_to=%2Forders%2F42%3Ftab%3Ditems%23notes']);
    const url = new URL(loc.assigned[0], PAGE);
    assert.equal(url.searchParams.get('acr_values'), 'mfa');
    assert.equal(url.searchParams.get('return_to'), '/orders/42?tab=items#notes');
  });

  it('keeps the return_to the login_url has', async () => {
    const fetch = backend(() => stepUp('/auth/login?acr_values=mfa&return_to=%2Fsettings'));
    const loc = fakeLocation();
    const pending = createClient({ fetch, location: loc }).fetch('/api/echo/x');
    assert.equal(await settledState(pending), 'pending');
    assert.deepEqual(loc.assigned, ['/auth/login?acr_values=mfa&return_to=%2Fsettings']);
  });

  it('forgets the token, like any 401', async () => {
    let n = 0;
    const fetch = backend(() => (++n === 2 ? stepUp('/auth/login?acr_values=mfa') : json(200, {})));
    const loc = fakeLocation();
    const sp = createClient({ fetch, location: loc });
    await sp.fetch('/api/echo/x', { method: 'POST' });
    void sp.fetch('/api/echo/x', { method: 'POST' });
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(loc.assigned.length, 1);
    await sp.fetch('/api/echo/x', { method: 'POST' });
    assert.equal(sessionCalls(fetch), 2);
  });

  it('does not follow a login_url off Sallyport: falls back to the plain login', async () => {
    const loginUrls = [
      '//evil.example/auth/login',
      'https://evil.example/auth/login?acr_values=mfa',
      '/\\evil.example/auth/login',
      '/\t/evil.example/auth/login',
      'javascript:alert(1)',
      'auth/login?acr_values=mfa',
      '',
      42,
      null,
    ];
    for (const loginUrl of loginUrls) {
      const fetch = backend(() => stepUp(loginUrl));
      const loc = fakeLocation(`${PAGE}/a?b=c`);
      const pending = createClient({ fetch, location: loc }).fetch('/api/echo/x');
      assert.equal(await settledState(pending), 'pending');
      assert.deepEqual(loc.assigned, ['/auth/login?return_to=%2Fa%3Fb%3Dc'], `login_url ${JSON.stringify(loginUrl)}`);
    }
  });

  it('takes login_url only from a step_up_required answer', async () => {
    const fetch = backend(() => json(401, { error: 'session_expired', login_url: '/auth/login?acr_values=mfa' }));
    const loc = fakeLocation(`${PAGE}/a`);
    const pending = createClient({ fetch, location: loc }).fetch('/api/echo/x');
    assert.equal(await settledState(pending), 'pending');
    assert.deepEqual(loc.assigned, ['/auth/login?return_to=%2Fa']);
  });

  it('puts the login_url under baseUrl', async () => {
    const base = 'https://auth.example.com';
    const fetch = backend(() => stepUp('/auth/login?acr_values=mfa'));
    const loc = fakeLocation('https://spa.example.com/page?q=1#h');
    const pending = createClient({ fetch, location: loc, baseUrl: base }).fetch('/api/echo/x');
    assert.equal(await settledState(pending), 'pending');
    assert.deepEqual(loc.assigned, [`${base}/auth/login?acr_values=mfa&return_to=%2Fpage%3Fq%3D1%23h`]);
  });
});

describe('evaluate and can', () => {
  const EVALUATIONS = '/api/auth/evaluations';
  const sent = (call) => JSON.parse(call.init.body).evaluations;
  /** Answers every question: may read, may not delete. */
  const pdp = (call) =>
    json(200, {
      evaluations: sent(call).map((e) =>
        e.action.name === 'read' ? { decision: true } : { decision: false, context: { reason_user: { en: `not ${e.resource.id}` } } },
      ),
    });
  const evalCalls = (f) => f.calls.filter((c) => c.url === EVALUATIONS);

  it('posts the questions as AuthZEN JSON with the CSRF token and answers in order', async () => {
    const fetch = backend(pdp);
    const sp = createClient({ fetch, location: fakeLocation() });
    const decisions = await sp.evaluate([
      { action: { name: 'read' }, resource: { type: 'order', id: '42' } },
      { action: { name: 'delete' }, resource: { type: 'order', id: '42' } },
    ]);
    assert.deepEqual(decisions, [{ decision: true }, { decision: false, reasonUser: { en: 'not 42' } }]);
    const [call] = evalCalls(fetch);
    assert.equal(call.method, 'POST');
    assert.equal(call.credentials, 'same-origin');
    assert.equal(call.headers.get('x-csrf-token'), TOKEN);
    assert.equal(call.headers.get('content-type'), 'application/json');
    assert.equal(call.headers.get('accept'), 'application/json');
    assert.deepEqual(JSON.parse(call.init.body), {
      evaluations: [
        { action: { name: 'read' }, resource: { type: 'order', id: '42' } },
        { action: { name: 'delete' }, resource: { type: 'order', id: '42' } },
      ],
    });
  });

  it('sends a plain action string as { name }, and only name, type and id', async () => {
    const fetch = backend(pdp);
    const sp = createClient({ fetch, location: fakeLocation() });
    await sp.evaluate([
      { action: 'read', resource: { type: 'order', id: '1' } },
      { action: { name: 'delete', extra: 1 }, resource: { type: 'order', id: '2', owner: 'x' } },
    ]);
    assert.deepEqual(sent(evalCalls(fetch)[0]), [
      { action: { name: 'read' }, resource: { type: 'order', id: '1' } },
      { action: { name: 'delete' }, resource: { type: 'order', id: '2' } },
    ]);
  });

  it('splits 45 questions into batches of 20, 20 and 5, one after another, and keeps the order', async () => {
    let inFlight = 0;
    let most = 0;
    const fetch = backend(async (call) => {
      most = Math.max(most, ++inFlight);
      await new Promise((r) => setTimeout(r, 1));
      inFlight--;
      return json(200, { evaluations: sent(call).map((e) => ({ decision: Number(e.resource.id) % 3 === 0 })) });
    });
    const sp = createClient({ fetch, location: fakeLocation() });
    const items = Array.from({ length: 45 }, (_, i) => ({ action: 'read', resource: { type: 'doc', id: String(i) } }));
    const decisions = await sp.evaluate(items);
    assert.deepEqual(
      decisions,
      items.map((_, i) => ({ decision: i % 3 === 0 })),
    );
    const calls = evalCalls(fetch);
    assert.deepEqual(
      calls.map((c) => sent(c).length),
      [20, 20, 5],
    );
    assert.deepEqual(
      calls.flatMap((c) => sent(c).map((e) => e.resource.id)),
      items.map((e) => e.resource.id),
    );
    assert.equal(most, 1);
    assert.equal(sessionCalls(fetch), 1);
    for (const call of calls) assert.equal(call.headers.get('x-csrf-token'), TOKEN);
  });

  it('resolves an empty list to [] without any request', async () => {
    const fetch = backend(pdp);
    const sp = createClient({ fetch, location: fakeLocation() });
    assert.deepEqual(await sp.evaluate([]), []);
    assert.equal(fetch.calls.length, 0);
  });

  it('retries once with a fresh token after 403 csrf_failed', async () => {
    let tokens = 0;
    const fetch = backend((call) => (call.headers.get('x-csrf-token') === 'fresh' ? pdp(call) : json(403, { error: 'csrf_failed' })), {
      session: () => loggedIn(++tokens === 1 ? 'stale' : 'fresh'),
    });
    const sp = createClient({ fetch, location: fakeLocation() });
    assert.equal(await sp.can('read', { type: 'order', id: '42' }), true);
    const calls = evalCalls(fetch);
    assert.deepEqual(
      calls.map((c) => c.headers.get('x-csrf-token')),
      ['stale', 'fresh'],
    );
    assert.deepEqual(sent(calls[1]), [{ action: { name: 'read' }, resource: { type: 'order', id: '42' } }]);
  });

  it('sends the page to the login on 401, and never settles', async () => {
    const fetch = backend(() => json(401, { error: 'session_expired', message: 'ended' }));
    const loc = fakeLocation(`${PAGE}/a?b=c`);
    const pending = createClient({ fetch, location: loc }).can('read', { type: 'order', id: '42' });
    assert.equal(await settledState(pending), 'pending');
    assert.deepEqual(loc.assigned, ['/auth/login?return_to=%2Fa%3Fb%3Dc']);
  });

  it('sends the page to the login when there is no session, without asking', async () => {
    const fetch = backend(pdp, { session: loggedOut });
    const loc = fakeLocation(`${PAGE}/a`);
    const pending = createClient({ fetch, location: loc }).evaluate([{ action: 'read', resource: { type: 'o', id: '1' } }]);
    assert.equal(await settledState(pending), 'pending');
    assert.deepEqual(loc.assigned, ['/auth/login?return_to=%2Fa']);
    assert.equal(evalCalls(fetch).length, 0);
  });

  it('follows a step_up_required answer to the login_url', async () => {
    const fetch = backend(() => json(401, { error: 'step_up_required', login_url: '/auth/login?acr_values=mfa' }));
    const loc = fakeLocation(`${PAGE}/a`);
    const pending = createClient({ fetch, location: loc }).can('delete', { type: 'order', id: '42' });
    assert.equal(await settledState(pending), 'pending');
    assert.deepEqual(loc.assigned, ['/auth/login?acr_values=mfa&return_to=%2Fa']);
  });

  it('rejects with the code on 503 pdp_unavailable and 400', async () => {
    const answers = {
      1: () => json(503, { error: 'pdp_unavailable', message: 'the decision point is unavailable', correlation_id: 'corr-503' }),
      2: () => json(400, { error: 'invalid_request', message: 'ask 1 to 20 evaluations at a time', correlation_id: 'corr-400' }),
    };
    let n = 0;
    const fetch = backend(() => answers[++n]());
    const loc = fakeLocation();
    const sp = createClient({ fetch, location: loc });
    await assert.rejects(sp.can('read', { type: 'order', id: '42' }), (err) => {
      assert.ok(err instanceof SallyportError);
      assert.equal(err.status, 503);
      assert.equal(err.code, 'pdp_unavailable');
      assert.equal(err.correlationId, 'corr-503');
      assert.match(err.message, /^evaluation: HTTP 503 pdp_unavailable/);
      return true;
    });
    await assert.rejects(sp.evaluate([{ action: 'read', resource: { type: 'order', id: '42' } }]), {
      name: 'SallyportError',
      status: 400,
      code: 'invalid_request',
      correlationId: 'corr-400',
    });
    assert.deepEqual(loc.assigned, []);
  });

  it('rejects a second 403 csrf_failed with its code', async () => {
    const fetch = backend(() => json(403, { error: 'csrf_failed' }));
    await assert.rejects(createClient({ fetch, location: fakeLocation() }).can('read', { type: 'o', id: '1' }), {
      status: 403,
      code: 'csrf_failed',
    });
    assert.equal(evalCalls(fetch).length, 2);
  });

  it('rejects a malformed answer as invalid_response', async () => {
    const one = [{ action: 'read', resource: { type: 'order', id: '42' } }];
    const answers = [
      () => new Response('not json', { status: 200 }),
      () => json(200, null),
      () => json(200, [{ decision: true }]),
      () => json(200, {}),
      () => json(200, { evaluations: {} }),
      () => json(200, { evaluations: [] }),
      () => json(200, { evaluations: [{ decision: true }, { decision: true }] }),
      () => json(200, { evaluations: [{ decision: 'true' }] }),
      () => json(200, { evaluations: [{}] }),
      () => json(200, { evaluations: [null] }),
      () => json(200, { decision: true }),
    ];
    for (const answer of answers) {
      const sp = createClient({ fetch: backend(answer), location: fakeLocation() });
      await assert.rejects(sp.evaluate(one), { name: 'SallyportError', code: 'invalid_response' });
    }
  });

  it('turns a network error into a SallyportError', async () => {
    const cause = new TypeError('fetch failed');
    const fetch = backend(() => {
      throw cause;
    });
    await assert.rejects(createClient({ fetch, location: fakeLocation() }).can('read', { type: 'o', id: '1' }), (err) => {
      assert.ok(err instanceof SallyportError);
      assert.equal(err.code, 'network_error');
      assert.equal(err.cause, cause);
      return true;
    });
  });

  it('can() resolves to the decision, and asks every time (no cache in the client)', async () => {
    const fetch = backend(pdp);
    const sp = createClient({ fetch, location: fakeLocation() });
    assert.equal(await sp.can('read', { type: 'order', id: '42' }), true);
    assert.equal(await sp.can({ name: 'delete' }, { type: 'order', id: '42' }), false);
    assert.equal(await sp.can('read', { type: 'order', id: '42' }), true);
    assert.equal(evalCalls(fetch).length, 3);
  });

  it('on another origin: asks Sallyport there with credentials include', async () => {
    const base = 'https://auth.example.com';
    const fetch = fakeFetch((call) => (call.url.endsWith('/api/auth/session') ? loggedIn() : pdp(call)));
    const sp = createClient({ fetch, location: fakeLocation('https://spa.example.com/'), baseUrl: base });
    assert.equal(await sp.can('read', { type: 'order', id: '42' }), true);
    assert.deepEqual(
      fetch.calls.map((c) => [c.url, c.credentials]),
      [
        [`${base}/api/auth/session`, 'include'],
        [`${base}${EVALUATIONS}`, 'include'],
      ],
    );
    assert.equal(fetch.calls[1].headers.get('x-csrf-token'), TOKEN);
  });
});

describe('logout', () => {
  it('posts with the CSRF token, asks for JSON, then navigates to redirect_to', async () => {
    const endSession = 'http://127.0.0.1:9000/logout?id_token_hint=x&post_logout_redirect_uri=http%3A%2F%2Flocalhost%3A8080%2F';
    const fetch = backend(() => json(200, { redirect_to: endSession }));
    const loc = fakeLocation();
    const sp = createClient({ fetch, location: loc });
    await sp.logout('/');
    const call = fetch.calls.at(-1);
    assert.equal(call.url, '/auth/logout?return_to=%2F');
    assert.equal(call.method, 'POST');
    assert.equal(call.credentials, 'same-origin');
    assert.equal(call.headers.get('x-csrf-token'), TOKEN);
    assert.equal(call.headers.get('accept'), 'application/json');
    assert.deepEqual(loc.assigned, [endSession]);
  });

  it('sends no return_to when none is given, and clears the cached token', async () => {
    const fetch = backend((call) => (call.url.startsWith('/auth/logout') ? json(200, { redirect_to: '/' }) : json(200, {})));
    const loc = fakeLocation();
    const sp = createClient({ fetch, location: loc });
    await sp.getSession();
    await sp.logout();
    assert.equal(fetch.calls.at(-1).url, '/auth/logout');
    assert.deepEqual(loc.assigned, ['/']);
    assert.equal(sessionCalls(fetch), 1);
    await sp.fetch('/api/echo/x', { method: 'POST' });
    assert.equal(sessionCalls(fetch), 2);
  });

  it('still logs out without a token when already logged out', async () => {
    const fetch = backend(() => json(200, { redirect_to: '/bye' }), { session: loggedOut });
    const loc = fakeLocation();
    await createClient({ fetch, location: loc }).logout('/bye');
    assert.equal(fetch.calls.at(-1).headers.has('x-csrf-token'), false);
    assert.deepEqual(loc.assigned, ['/bye']);
  });

  it('retries once after 403 csrf_failed', async () => {
    let tokens = 0;
    const fetch = backend(
      (call) => (call.headers.get('x-csrf-token') === 'fresh' ? json(200, { redirect_to: '/' }) : json(403, { error: 'csrf_failed' })),
      { session: () => loggedIn(++tokens === 1 ? 'stale' : 'fresh') },
    );
    const loc = fakeLocation();
    await createClient({ fetch, location: loc }).logout('/');
    assert.deepEqual(loc.assigned, ['/']);
    assert.equal(sessionCalls(fetch), 2);
  });

  it('throws a SallyportError carrying code and correlation id, and does not navigate', async () => {
    const fetch = backend(() => json(400, { error: 'invalid_return_to', message: 'bad', correlation_id: 'corr-400' }));
    const loc = fakeLocation();
    await assert.rejects(createClient({ fetch, location: loc }).logout('https://evil.example/'), {
      name: 'SallyportError',
      status: 400,
      code: 'invalid_return_to',
      correlationId: 'corr-400',
    });
    assert.equal(fetch.calls.at(-1).url, '/auth/logout?return_to=https%3A%2F%2Fevil.example%2F');
    assert.deepEqual(loc.assigned, []);
  });

  it('rejects an answer without redirect_to', async () => {
    const loc = fakeLocation();
    await assert.rejects(createClient({ fetch: backend(() => json(200, {})), location: loc }).logout(), {
      code: 'invalid_response',
    });
    assert.deepEqual(loc.assigned, []);
  });
});

describe('baseUrl', () => {
  it('on another origin: prefixes paths and sends credentials include', async () => {
    const base = 'https://auth.example.com';
    const fetch = backend((call) => (call.url.includes('/auth/logout') ? json(200, { redirect_to: '/' }) : json(200, {})));
    const loc = fakeLocation('https://spa.example.com/page?q=1#h');
    const sp = createClient({ fetch, location: loc, baseUrl: `${base}/` });
    await sp.getSession();
    await sp.fetch('/api/echo/x', { method: 'POST' });
    await sp.fetch(`${base}/api/echo/y`);
    await sp.logout('/');
    assert.deepEqual(
      fetch.calls.map((c) => [c.url, c.credentials]),
      [
        [`${base}/api/auth/session`, 'include'],
        [`${base}/api/echo/x`, 'include'],
        [`${base}/api/echo/y`, 'include'],
        [`${base}/auth/logout?return_to=%2F`, 'include'],
      ],
    );
    assert.equal(fetch.calls[1].headers.get('x-csrf-token'), TOKEN);
    sp.login();
    assert.equal(loc.assigned.at(-1), `${base}/auth/login?return_to=%2Fpage%3Fq%3D1%23h`);
  });

  it('on the page origin: keeps credentials same-origin', async () => {
    const fetch = backend(echo);
    const sp = createClient({ fetch, location: fakeLocation(`${PAGE}/`), baseUrl: PAGE });
    await sp.fetch('/api/echo/x');
    assert.equal(fetch.calls[0].url, `${PAGE}/api/echo/x`);
    assert.equal(fetch.calls[0].credentials, 'same-origin');
  });

  it('lets the caller choose credentials', async () => {
    const fetch = backend(echo);
    const sp = createClient({ fetch, location: fakeLocation() });
    await sp.fetch('/api/echo/x', { credentials: 'omit' });
    assert.equal(fetch.calls[0].credentials, 'omit');
  });
});

describe('default client', () => {
  it('exports functions bound to the global fetch and location', async () => {
    const fetch = backend(() => json(401, { error: 'not_authenticated' }));
    const loc = fakeLocation(`${PAGE}/deep/link?x=1#y`);
    const saved = { fetch: globalThis.fetch, location: globalThis.location };
    globalThis.fetch = fetch;
    globalThis.location = loc;
    try {
      assert.equal((await client.getSession()).authenticated, true);
      const pending = client.fetch('/api/echo/hello');
      assert.equal(await settledState(pending), 'pending');
      assert.deepEqual(loc.assigned, ['/auth/login?return_to=%2Fdeep%2Flink%3Fx%3D1%23y']);
      client.login('/a');
      assert.equal(loc.assigned.at(-1), '/auth/login?return_to=%2Fa');
      assert.equal(typeof client.logout, 'function');
      globalThis.fetch = backend((call) => json(200, { evaluations: JSON.parse(call.init.body).evaluations.map(() => ({ decision: true })) }));
      assert.equal(await client.can('read', { type: 'order', id: '42' }), true);
      assert.deepEqual(await client.evaluate([{ action: 'read', resource: { type: 'order', id: '1' } }]), [{ decision: true }]);
      assert.equal(globalThis.fetch.calls.filter((c) => c.url === '/api/auth/evaluations').length, 2);
      assert.equal(typeof client.createClient, 'function');
    } finally {
      globalThis.fetch = saved.fetch;
      if (saved.location === undefined) delete globalThis.location;
      else globalThis.location = saved.location;
    }
  });
});

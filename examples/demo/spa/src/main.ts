// The Sallyport demo page. It never sees a token: it asks the gateway who is logged in, and
// calls the API through the client, which adds the CSRF header and handles a lost session.
// It also asks the gateway what the user may do with order 42 (its Cedar policies), to show
// the delete button only to those allowed; the gateway checks every order request anyway.
import './style.css';

import { SallyportError, createClient, type LocationLike, type Session } from '@sallyport/client';

function $<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing element #${id}`);
  return el as T;
}

const els = {
  status: $('status'),
  path: $('path'),
  error: $('error'),
  signedOut: $('signed-out'),
  login: $<HTMLAnchorElement>('login'),
  signedIn: $('signed-in'),
  userName: $('user-name'),
  expiresAt: $<HTMLTimeElement>('expires-at'),
  claims: $<HTMLTableElement>('claims'),
  callApi: $<HTMLButtonElement>('call-api'),
  logout: $<HTMLButtonElement>('logout'),
  api: $('api'),
  apiStatus: $('api-status'),
  apiResult: $('api-result'),
  order: $('order'),
  orderLoad: $<HTMLButtonElement>('order-load'),
  orderDelete: $<HTMLButtonElement>('order-delete'),
  orderOutput: $('order-output'),
  orderRequest: $('order-request'),
  orderStatus: $('order-status'),
  orderResult: $('order-result'),
};

/** The demo's one order, as the policies (examples/demo/policies.cedar) see it. */
const ORDER = { type: 'order', id: '42' } as const;
const ORDER_PATH = `/api/orders/${ORDER.id}`;

/**
 * Bumped each time the user's data leaves the page: an answer that arrives afterwards (a
 * permission, an order) belongs to a page state that is gone, and is dropped.
 */
let generation = 0;

const currentPath = (): string => `${location.pathname}${location.search}${location.hash}`;

// Every navigation the client starts (login, logout) first takes the user's data off the page,
// so it is not in the DOM the back-forward cache keeps.
const pageLocation: LocationLike = {
  get href() {
    return location.href;
  },
  get pathname() {
    return location.pathname;
  },
  get search() {
    return location.search;
  },
  get hash() {
    return location.hash;
  },
  assign(url: string) {
    clearUserData();
    setStatus('redirecting', 'Redirecting…');
    location.assign(url);
  },
};

const sallyport = createClient({ location: pageLocation });

type State = 'loading' | 'signed-in' | 'signed-out' | 'redirecting' | 'error';

function setStatus(state: State, text: string): void {
  els.status.dataset['state'] = state;
  els.status.textContent = text;
}

function showError(message: string): void {
  els.error.textContent = message;
  els.error.hidden = message === '';
}

function describe(err: unknown, what: string): string {
  if (err instanceof SallyportError) {
    const id = err.correlationId ? ` Correlation id: ${err.correlationId}.` : '';
    return `${what}: ${err.message}.${id}`;
  }
  return `${what}: ${err instanceof Error ? err.message : String(err)}`;
}

const loginHref = (): string => `/auth/login?return_to=${encodeURIComponent(currentPath())}`;

function showPath(): void {
  els.path.textContent = currentPath();
  els.login.href = loginHref();
}

/** Takes everything about the user off the page. */
function clearUserData(): void {
  generation += 1;
  els.signedIn.hidden = true;
  els.signedOut.hidden = true;
  els.login.hidden = true;
  els.api.hidden = true;
  els.userName.textContent = '';
  els.expiresAt.textContent = '';
  els.expiresAt.removeAttribute('datetime');
  els.claims.tBodies[0]?.replaceChildren();
  els.apiStatus.textContent = '';
  els.apiResult.textContent = '';
  els.order.hidden = true;
  setCanDelete('unknown');
  els.orderOutput.hidden = true;
  els.orderRequest.textContent = '';
  els.orderStatus.textContent = '';
  showOrderResult('');
}

/**
 * Whether the user may delete order 42: `unknown` until the gateway has answered (and the
 * button stays hidden), `error` when it could not (hidden too). Kept in `data-can-delete`.
 */
function setCanDelete(state: 'unknown' | 'true' | 'false' | 'error'): void {
  els.order.dataset['canDelete'] = state;
  els.orderDelete.hidden = state !== 'true';
}

function showOrderResult(text: string, denied = false): void {
  els.orderResult.textContent = text;
  if (denied) els.orderResult.dataset['denied'] = '';
  else delete els.orderResult.dataset['denied'];
}

function claimValue(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function render(session: Session): void {
  clearUserData();
  if (!session.authenticated) {
    setStatus('signed-out', 'Signed out');
    els.login.href = loginHref();
    els.login.hidden = false;
    els.signedOut.hidden = false;
    return;
  }
  const { user } = session;
  setStatus('signed-in', 'Signed in');
  els.userName.textContent = user.name ?? user.preferred_username ?? user.email ?? user.sub;
  const expires = new Date(session.expires_at * 1000);
  els.expiresAt.dateTime = expires.toISOString();
  els.expiresAt.textContent = expires.toLocaleString();
  const rows = Object.entries(user).map(([claim, value]) => {
    const row = document.createElement('tr');
    const name = document.createElement('th');
    name.scope = 'row';
    name.textContent = claim;
    const cell = document.createElement('td');
    cell.textContent = claimValue(value);
    row.append(name, cell);
    return row;
  });
  els.claims.tBodies[0]?.replaceChildren(...rows);
  els.signedIn.hidden = false;
  els.order.hidden = false;
  void checkOrderPermissions();
}

/** Asks the gateway (`POST /api/auth/evaluations`) whether the user may delete order 42. */
async function checkOrderPermissions(): Promise<void> {
  const asked = generation;
  setCanDelete('unknown');
  try {
    // A 401 here sends the page to the login; this promise then never settles.
    const allowed = await sallyport.can('delete', ORDER);
    if (asked === generation) setCanDelete(allowed ? 'true' : 'false');
  } catch (err) {
    if (asked !== generation) return;
    setCanDelete('error');
    showError(describe(err, 'Could not check what you may do with order 42'));
  }
}

async function refresh(): Promise<void> {
  clearUserData();
  showError('');
  showPath();
  setStatus('loading', 'Loading…');
  try {
    render(await sallyport.getSession());
  } catch (err) {
    setStatus('error', 'Session unavailable');
    showError(describe(err, 'Could not check the session'));
  }
}

/** A response body: parsed JSON, else the text as it came. */
async function readBody(res: Response): Promise<unknown> {
  const text = await res.text();
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

function bodyText(body: unknown): string {
  return typeof body === 'string' ? body : JSON.stringify(body, null, 2);
}

function bodyFields(body: unknown): Record<string, unknown> {
  return typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : {};
}

/** `HTTP 503 pdp_unavailable (message). Correlation id: …` from Sallyport's JSON error body. */
function httpFailure(status: number, body: unknown): string {
  const info = bodyFields(body);
  const code = typeof info['error'] === 'string' ? info['error'] : `http_${status}`;
  const message = typeof info['message'] === 'string' ? ` (${info['message']})` : '';
  const id = typeof info['correlation_id'] === 'string' ? ` Correlation id: ${info['correlation_id']}.` : '';
  return `HTTP ${status} ${code}${message}.${id}`;
}

async function callApi(): Promise<void> {
  showError('');
  els.callApi.disabled = true;
  els.api.hidden = false;
  els.apiStatus.textContent = '…';
  els.apiResult.textContent = '';
  try {
    // A 401 here sends the page to the login; this promise then never settles.
    const res = await sallyport.fetch('/api/echo/hello?from=spa', { headers: { Accept: 'application/json' } });
    els.apiStatus.textContent = `→ HTTP ${res.status}`;
    const body = await readBody(res);
    els.apiResult.textContent = bodyText(body);
    if (!res.ok) showError(`The API call failed: ${httpFailure(res.status, body)}`);
  } catch (err) {
    els.apiStatus.textContent = '→ failed';
    showError(describe(err, 'The API call failed'));
  } finally {
    els.callApi.disabled = false;
  }
}

/**
 * Sends `method path` for order 42 through the client and shows the answer. A `403` is the
 * policies saying no: it shows their `reason_user`, not an error.
 */
async function orderRequest(method: 'GET' | 'DELETE', path: string, button: HTMLButtonElement): Promise<void> {
  const asked = generation;
  showError('');
  button.disabled = true;
  els.orderOutput.hidden = false;
  els.orderRequest.textContent = `${method} ${path}`;
  els.orderStatus.textContent = '…';
  showOrderResult('');
  try {
    // A 401 here sends the page to the login; this promise then never settles.
    const res = await sallyport.fetch(path, { method, headers: { Accept: 'application/json' } });
    const body = await readBody(res);
    if (asked !== generation) return;
    const info = bodyFields(body);
    const reason = info['reason_user'];
    if (res.status === 403 && info['error'] === 'access_denied') {
      els.orderStatus.textContent = '→ HTTP 403 access_denied';
      showOrderResult(typeof reason === 'string' && reason !== '' ? reason : 'You may not do this.', true);
      return;
    }
    els.orderStatus.textContent = `→ HTTP ${res.status}`;
    showOrderResult(bodyText(body));
    if (!res.ok) showError(`${method} ${path} failed: ${httpFailure(res.status, body)}`);
  } catch (err) {
    if (asked !== generation) return;
    els.orderStatus.textContent = '→ failed';
    showError(describe(err, `${method} ${path} failed`));
  } finally {
    button.disabled = false;
  }
}

async function logout(): Promise<void> {
  showError('');
  els.logout.disabled = true;
  clearUserData();
  setStatus('redirecting', 'Signing out…');
  try {
    await sallyport.logout('/');
  } catch (err) {
    await refresh();
    showError(describe(err, 'Could not sign out'));
  } finally {
    els.logout.disabled = false;
  }
}

els.login.addEventListener('click', (event) => {
  event.preventDefault();
  sallyport.login(currentPath());
});
els.callApi.addEventListener('click', () => void callApi());
els.orderLoad.addEventListener('click', () => void orderRequest('GET', `${ORDER_PATH}/details`, els.orderLoad));
els.orderDelete.addEventListener('click', () => void orderRequest('DELETE', `${ORDER_PATH}/x`, els.orderDelete));
els.logout.addEventListener('click', () => void logout());
window.addEventListener('hashchange', showPath);
window.addEventListener('popstate', showPath);

// Back to a page from the back-forward cache (for instance after signing out): what it shows
// may be stale, so check the session again.
window.addEventListener('pageshow', (event) => {
  if (event.persisted) void refresh();
});

void refresh();

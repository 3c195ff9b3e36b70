// The Sallyport demo page. It never sees a token: it asks the gateway who is logged in, and
// calls the API through the client, which adds the CSRF header and handles a lost session.
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
};

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
    const text = await res.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // Not JSON: shown as it came.
    }
    els.apiResult.textContent = typeof body === 'string' ? body : JSON.stringify(body, null, 2);
    if (!res.ok) {
      const info = typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : {};
      const code = typeof info['error'] === 'string' ? info['error'] : `http_${res.status}`;
      const message = typeof info['message'] === 'string' ? ` (${info['message']})` : '';
      const id = typeof info['correlation_id'] === 'string' ? ` Correlation id: ${info['correlation_id']}.` : '';
      showError(`The API call failed: HTTP ${res.status} ${code}${message}.${id}`);
    }
  } catch (err) {
    els.apiStatus.textContent = '→ failed';
    showError(describe(err, 'The API call failed'));
  } finally {
    els.callApi.disabled = false;
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
els.logout.addEventListener('click', () => void logout());
window.addEventListener('hashchange', showPath);
window.addEventListener('popstate', showPath);

// Back to a page from the back-forward cache (for instance after signing out): what it shows
// may be stale, so check the session again.
window.addEventListener('pageshow', (event) => {
  if (event.persisted) void refresh();
});

void refresh();

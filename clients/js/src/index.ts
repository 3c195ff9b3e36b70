/**
 * @sallyport/client: the browser side of a Sallyport Backend-for-Frontend.
 *
 * The browser never holds a token: it has a session cookie, and this client asks Sallyport who
 * is logged in (`GET /api/auth/session`), sends the session's CSRF token on state-changing API
 * calls, sends the page to `/auth/login` when the session is gone or a stronger login is needed,
 * and asks what the user may do (`POST /api/auth/evaluations`).
 */

/** The claims Sallyport shares about the logged-in user. */
export interface SallyportUser {
  sub: string;
  name?: string;
  email?: string;
  preferred_username?: string;
  [claim: string]: unknown;
}

/** `GET /api/auth/session` when logged in. */
export interface AuthenticatedSession {
  authenticated: true;
  user: SallyportUser;
  /** When the session ends at the latest, in Unix seconds. */
  expires_at: number;
  /** The token to send in the CSRF header on unsafe requests. */
  csrf_token: string;
}

/** `GET /api/auth/session` when not logged in. */
export interface AnonymousSession {
  authenticated: false;
  login_url: string;
}

export type Session = AuthenticatedSession | AnonymousSession;

/** One question for {@link SallyportClient.evaluate}: may the user do `action` to `resource`? */
export interface Evaluation {
  /** The action's name, such as `'read'`, or an AuthZEN action `{ name }`. */
  action: string | { name: string };
  resource: { type: string; id: string };
}

/** The answer to one {@link Evaluation}. */
export interface Decision {
  decision: boolean;
  /** Why not, when the policy gave a reason safe to show to the user (`context.reason_user`). */
  reasonUser?: unknown;
}

/** The part of `window.location` the client uses. */
export interface LocationLike {
  href: string;
  pathname: string;
  search: string;
  hash: string;
  assign(url: string): void;
}

export interface SallyportOptions {
  /**
   * Where Sallyport is, without a trailing slash: `''` (the default) when it serves the page,
   * or an origin such as `https://app.example.com` for an SPA served from another origin
   * (listed in Sallyport's `cors.allowed_origins`; requests then use `credentials: 'include'`).
   */
  baseUrl?: string;
  /** The CSRF header Sallyport expects (`csrf.header`). Default `X-CSRF-Token`. */
  csrfHeader?: string;
  /** The `fetch` to use. Default: the global one, looked up at call time. */
  fetch?: typeof globalThis.fetch;
  /** The location to read and navigate. Default: the global `location`, at call time. */
  location?: LocationLike;
}

export interface SallyportClient {
  /**
   * `fetch()` for Sallyport's API: sends the session cookie, adds the CSRF header to unsafe
   * methods, retries once after `403 csrf_failed` with a fresh token, and on `401` sends the
   * page to the login (the returned promise then never settles); on `401 step_up_required` to
   * the stronger login Sallyport names. Requests to other origins are passed through
   * untouched, so the CSRF token never leaves for them.
   */
  fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
  /** Who is logged in. Remembers the CSRF token for `fetch`. */
  getSession(): Promise<Session>;
  /** Navigates to the login; back to `returnTo` (default: the current page) afterwards. */
  login(returnTo?: string): void;
  /**
   * Ends the session at Sallyport and navigates to the provider's logout, which comes back
   * to `returnTo` (Sallyport's default is `/`). Resolves once the navigation has started.
   */
  logout(returnTo?: string): Promise<void>;
  /**
   * Asks Sallyport what the user may do (`POST /api/auth/evaluations`, through this client's
   * `fetch`): one decision per question, in the same order; more than 20 questions go in
   * batches of 20, one after another. Decisions are never cached here (Sallyport caches).
   * For showing or hiding things only: the API still decides on every request.
   */
  evaluate(items: readonly Evaluation[]): Promise<Decision[]>;
  /** Whether the user may do `action` to `resource`: {@link evaluate} of one question. */
  can(action: Evaluation['action'], resource: Evaluation['resource']): Promise<boolean>;
}

/** A failed call to Sallyport: an HTTP status with Sallyport's error code, or a network error. */
export class SallyportError extends Error {
  override readonly name = 'SallyportError';
  /** The HTTP status, or `0` for a network error. */
  readonly status: number;
  /** Sallyport's stable code (`session_expired`, `csrf_failed`, …), `network_error`, `invalid_response` or `http_<status>`. */
  readonly code: string;
  /** Sallyport's correlation id for the failed request, to find it in its log. */
  readonly correlationId: string | undefined;

  constructor(
    message: string,
    details: { status: number; code: string; correlationId?: string | undefined; cause?: unknown },
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.status = details.status;
    this.code = details.code;
    this.correlationId = details.correlationId;
  }
}

const DEFAULT_CSRF_HEADER = 'X-CSRF-Token';
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE']);
/** Most questions Sallyport answers in one `POST /api/auth/evaluations`. */
const MAX_EVALUATIONS = 20;
/** An origin that stands for Sallyport's when checking that a path stays on it. */
const PATH_ORIGIN = 'http://sallyport.invalid';

/** A promise that never settles: the page is navigating away. */
function never(): Promise<never> {
  return new Promise<never>(() => {});
}

function isRequest(input: unknown): input is Request {
  return typeof Request !== 'undefined' && input instanceof Request;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Reads a JSON body without consuming `res`; `undefined` when it is not JSON. */
async function peekJson(res: Response): Promise<unknown> {
  try {
    return await res.clone().json();
  } catch {
    return undefined;
  }
}

/** Sallyport's `error` code in a JSON error body. */
async function errorCode(res: Response): Promise<string | undefined> {
  const body = await peekJson(res);
  return isObject(body) && typeof body['error'] === 'string' ? body['error'] : undefined;
}

async function errorFrom(res: Response, what: string): Promise<SallyportError> {
  const body = await peekJson(res);
  const field = (name: string): string | undefined =>
    isObject(body) && typeof body[name] === 'string' ? (body[name] as string) : undefined;
  const code = field('error') ?? `http_${res.status}`;
  const detail = field('message') ?? res.statusText;
  return new SallyportError(`${what}: HTTP ${res.status} ${code}${detail ? ` (${detail})` : ''}`, {
    status: res.status,
    code,
    correlationId: field('correlation_id') ?? res.headers.get('X-Correlation-ID') ?? undefined,
  });
}

function networkError(what: string, cause: unknown): SallyportError {
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new SallyportError(`${what}: network error (${reason})`, { status: 0, code: 'network_error', cause });
}

function invalidResponse(what: string): SallyportError {
  return new SallyportError(`${what}: unexpected response`, { status: 200, code: 'invalid_response' });
}

/**
 * The `login_url` of a `401 step_up_required` answer, when it is a path on Sallyport: starts
 * with one `/` and stays on its origin once parsed (so no `//host`, `/\host`, nor a URL).
 */
function stepUpLoginUrl(body: unknown): string | undefined {
  if (!isObject(body) || body['error'] !== 'step_up_required') return undefined;
  const url = body['login_url'];
  if (typeof url !== 'string' || !url.startsWith('/') || url.startsWith('//')) return undefined;
  try {
    return new URL(url, PATH_ORIGIN).origin === PATH_ORIGIN ? url : undefined;
  } catch {
    return undefined;
  }
}

/** The body of `POST /api/auth/evaluations` for `items`. */
function evaluationsRequest(items: readonly Evaluation[]): string {
  return JSON.stringify({
    evaluations: items.map(({ action, resource }) => ({
      action: { name: typeof action === 'string' ? action : action.name },
      resource: { type: resource.type, id: resource.id },
    })),
  });
}

/** The decisions of an evaluations answer, when it has exactly `count` of them. */
function parseDecisions(body: unknown, count: number): Decision[] | undefined {
  const answers = isObject(body) ? body['evaluations'] : undefined;
  if (!Array.isArray(answers) || answers.length !== count) return undefined;
  const decisions: Decision[] = [];
  for (const answer of answers as unknown[]) {
    if (!isObject(answer) || typeof answer['decision'] !== 'boolean') return undefined;
    const context = answer['context'];
    const reasonUser = isObject(context) ? context['reason_user'] : undefined;
    decisions.push(
      reasonUser === undefined ? { decision: answer['decision'] } : { decision: answer['decision'], reasonUser },
    );
  }
  return decisions;
}

function parseSession(body: unknown, status: number): Session | undefined {
  if (!isObject(body)) return undefined;
  if (status === 200) {
    const { authenticated, user, expires_at: expiresAt, csrf_token: csrfToken } = body;
    if (
      authenticated !== true ||
      !isObject(user) ||
      typeof user['sub'] !== 'string' ||
      typeof expiresAt !== 'number' ||
      typeof csrfToken !== 'string'
    ) {
      return undefined;
    }
    return { ...body, authenticated: true, user: user as SallyportUser, expires_at: expiresAt, csrf_token: csrfToken };
  }
  const loginUrl = typeof body['login_url'] === 'string' ? body['login_url'] : '/auth/login';
  return { authenticated: false, login_url: loginUrl };
}

/** A client bound to `options`; each client keeps its own CSRF token. */
export function createClient(options: SallyportOptions = {}): SallyportClient {
  const baseUrl = (options.baseUrl ?? '').replace(/\/+$/, '');
  const csrfHeader = options.csrfHeader ?? DEFAULT_CSRF_HEADER;
  let csrfToken: string | undefined;
  let pendingToken: Promise<string> | undefined;

  const doFetch = (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const f = options.fetch ?? globalThis.fetch;
    if (typeof f !== 'function') throw new SallyportError('no fetch() available', { status: 0, code: 'network_error' });
    return f.call(globalThis, input, init);
  };

  const currentLocation = (): LocationLike | undefined =>
    options.location ?? (globalThis as { location?: LocationLike }).location;

  const pageOrigin = (): string | undefined => {
    const href = currentLocation()?.href;
    if (href === undefined) return undefined;
    try {
      return new URL(href).origin;
    } catch {
      return undefined;
    }
  };

  /** Sallyport's origin, when it can be told. */
  const gatewayOrigin = (): string | undefined => {
    if (baseUrl === '') return pageOrigin();
    try {
      return new URL(baseUrl, currentLocation()?.href).origin;
    } catch {
      return undefined;
    }
  };

  /** `include` when Sallyport is on another origin than the page, else `same-origin`. */
  const credentials = (): RequestCredentials => {
    const gateway = gatewayOrigin();
    const page = pageOrigin();
    if (gateway !== undefined && page !== undefined) return gateway === page ? 'same-origin' : 'include';
    return /^[a-z][a-z0-9+.-]*:/i.test(baseUrl) ? 'include' : 'same-origin';
  };

  /** A path on Sallyport (`/api/...`) becomes a URL under `baseUrl`. */
  const resolve = (path: string): string => (path.startsWith('/') && !path.startsWith('//') ? baseUrl + path : path);

  const currentPath = (): string => {
    const loc = currentLocation();
    return loc ? `${loc.pathname}${loc.search}${loc.hash}` : '/';
  };

  const login = (returnTo?: string): void => {
    const loc = currentLocation();
    if (!loc) throw new SallyportError('login: no location to navigate', { status: 0, code: 'no_location' });
    loc.assign(`${baseUrl}/auth/login?return_to=${encodeURIComponent(returnTo ?? currentPath())}`);
  };

  /** Navigates to `loginUrl`, a path on Sallyport, adding the current page as `return_to` unless it has one. */
  const loginAt = (loginUrl: string): void => {
    const loc = currentLocation();
    if (!loc) throw new SallyportError('login: no location to navigate', { status: 0, code: 'no_location' });
    const url = new URL(loginUrl, PATH_ORIGIN);
    if (url.searchParams.has('return_to')) {
      loc.assign(baseUrl + loginUrl);
      return;
    }
    const hash = loginUrl.indexOf('#');
    const path = hash === -1 ? loginUrl : loginUrl.slice(0, hash);
    const fragment = hash === -1 ? '' : loginUrl.slice(hash);
    const separator = !path.includes('?') ? '?' : path.endsWith('?') || path.endsWith('&') ? '' : '&';
    loc.assign(`${baseUrl}${path}${separator}return_to=${encodeURIComponent(currentPath())}${fragment}`);
  };

  /** A `401` from Sallyport: to the stronger login a `step_up_required` answer names, else the plain one. */
  const unauthenticated = async (res: Response): Promise<never> => {
    csrfToken = undefined;
    const stepUp = stepUpLoginUrl(await peekJson(res));
    if (stepUp === undefined) login();
    else loginAt(stepUp);
    return never();
  };

  const getSession = async (): Promise<Session> => {
    const what = 'session check';
    let res: Response;
    try {
      res = await doFetch(`${baseUrl}/api/auth/session`, {
        method: 'GET',
        credentials: credentials(),
        headers: { Accept: 'application/json' },
      });
    } catch (err) {
      throw err instanceof SallyportError ? err : networkError(what, err);
    }
    if (res.status !== 200 && res.status !== 401) throw await errorFrom(res, what);
    const session = parseSession(await peekJson(res), res.status);
    if (!session) throw invalidResponse(what);
    csrfToken = session.authenticated ? session.csrf_token : undefined;
    return session;
  };

  /** The CSRF token: the cached one, else a fresh session's; `undefined` when logged out. */
  const token = async (refresh = false): Promise<string | undefined> => {
    if (refresh) csrfToken = undefined;
    if (csrfToken !== undefined) return csrfToken;
    pendingToken ??= getSession()
      .then((s) => (s.authenticated ? s.csrf_token : ''))
      .finally(() => {
        pendingToken = undefined;
      });
    return (await pendingToken) || undefined;
  };

  const apiFetch = async (input: RequestInfo | URL, init: RequestInit = {}): Promise<Response> => {
    const target = isRequest(input) ? input : typeof input === 'string' ? resolve(input) : input;
    const url = isRequest(target) ? target.url : String(target);

    // Only Sallyport gets the token and the 401 handling; anything else goes out untouched.
    let sameGateway = true;
    const gateway = gatewayOrigin();
    if (gateway !== undefined) {
      try {
        sameGateway = new URL(url, gateway).origin === gateway;
      } catch {
        sameGateway = false;
      }
    }
    if (!sameGateway) return doFetch(target, init);

    const method = (init.method ?? (isRequest(target) ? target.method : 'GET')).toUpperCase();
    const unsafe = !SAFE_METHODS.has(method);
    // A retry needs the body again: keep a copy of a Request; a stream body cannot be replayed.
    const spare = unsafe && isRequest(target) ? target.clone() : undefined;
    const replayable = !(typeof ReadableStream !== 'undefined' && init.body instanceof ReadableStream);

    const send = async (req: RequestInfo | URL, refresh: boolean): Promise<Response> => {
      const headers = new Headers(init.headers ?? (isRequest(req) ? req.headers : undefined));
      if (unsafe) {
        const t = await token(refresh);
        if (t === undefined) {
          login();
          return never();
        }
        headers.set(csrfHeader, t);
      }
      return doFetch(req, { ...init, method, credentials: init.credentials ?? credentials(), headers });
    };

    let res = await send(target, false);
    if (unsafe && replayable && res.status === 403 && (await errorCode(res)) === 'csrf_failed') {
      res = await send(spare ?? target, true);
    }
    if (res.status === 401) return unauthenticated(res);
    return res;
  };

  const logout = async (returnTo?: string): Promise<void> => {
    const what = 'logout';
    const loc = currentLocation();
    if (!loc) throw new SallyportError('logout: no location to navigate', { status: 0, code: 'no_location' });
    const url =
      `${baseUrl}/auth/logout` + (returnTo === undefined ? '' : `?return_to=${encodeURIComponent(returnTo)}`);
    const post = async (refresh: boolean): Promise<Response> => {
      // Logged out already: Sallyport still answers where to go, without a token.
      const t = await token(refresh);
      const headers = new Headers({ Accept: 'application/json' });
      if (t !== undefined) headers.set(csrfHeader, t);
      try {
        return await doFetch(url, { method: 'POST', credentials: credentials(), headers });
      } catch (err) {
        throw err instanceof SallyportError ? err : networkError(what, err);
      }
    };

    let res = await post(false);
    if (res.status === 403 && (await errorCode(res)) === 'csrf_failed') res = await post(true);
    if (!res.ok) throw await errorFrom(res, what);
    const body = await peekJson(res);
    const redirectTo = isObject(body) ? body['redirect_to'] : undefined;
    if (typeof redirectTo !== 'string' || redirectTo === '') throw invalidResponse(what);
    csrfToken = undefined;
    loc.assign(redirectTo);
  };

  /** One request of at most {@link MAX_EVALUATIONS} questions. */
  const evaluateBatch = async (items: readonly Evaluation[]): Promise<Decision[]> => {
    const what = 'evaluation';
    let res: Response;
    try {
      res = await apiFetch('/api/auth/evaluations', {
        method: 'POST',
        headers: { Accept: 'application/json', 'Content-Type': 'application/json' },
        body: evaluationsRequest(items),
      });
    } catch (err) {
      throw err instanceof SallyportError ? err : networkError(what, err);
    }
    if (!res.ok) throw await errorFrom(res, what);
    const decisions = parseDecisions(await peekJson(res), items.length);
    if (!decisions) throw invalidResponse(what);
    return decisions;
  };

  const evaluate = async (items: readonly Evaluation[]): Promise<Decision[]> => {
    const decisions: Decision[] = [];
    // One batch after another: Sallyport bounds a request to spare its decision point.
    for (let i = 0; i < items.length; i += MAX_EVALUATIONS) {
      decisions.push(...(await evaluateBatch(items.slice(i, i + MAX_EVALUATIONS))));
    }
    return decisions;
  };

  const can = async (action: Evaluation['action'], resource: Evaluation['resource']): Promise<boolean> =>
    (await evaluate([{ action, resource }]))[0]?.decision === true;

  return { fetch: apiFetch, getSession, login, logout, evaluate, can };
}

/** The client with the default options: same origin, global `fetch` and `location`. */
export const sallyport: SallyportClient = /* @__PURE__ */ createClient();

/** {@link SallyportClient.fetch} of the default client. */
export function fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
  return sallyport.fetch(input, init);
}

/** {@link SallyportClient.getSession} of the default client. */
export function getSession(): Promise<Session> {
  return sallyport.getSession();
}

/** {@link SallyportClient.login} of the default client. */
export function login(returnTo?: string): void {
  sallyport.login(returnTo);
}

/** {@link SallyportClient.logout} of the default client. */
export function logout(returnTo?: string): Promise<void> {
  return sallyport.logout(returnTo);
}

/** {@link SallyportClient.evaluate} of the default client. */
export function evaluate(items: readonly Evaluation[]): Promise<Decision[]> {
  return sallyport.evaluate(items);
}

/** {@link SallyportClient.can} of the default client. */
export function can(action: Evaluation['action'], resource: Evaluation['resource']): Promise<boolean> {
  return sallyport.can(action, resource);
}

// A real OpenID Provider (panva/oidc-provider) for Sallyport's integration
// tests and the demo.
//
//   PROVIDER_CONFIG='{"port":0}' node --dns-result-order=ipv4first tests/provider/server.mjs
//
// Prints exactly one JSON line to stdout when ready: {"issuer":"http://127.0.0.1:<port>"}
// Everything else goes to stderr. Exits cleanly on SIGTERM/SIGINT.
//
// Accounts: alice / secret, bob / secret, and mallory / secret, whose claims carry CR/LF. Consent is granted automatically.
// Step-up: the login form has an optional one-time code (alice's is 123456; the others have none).
// A login with the code is acr "mfa" (amr pwd, otp), one without it acr "pwd" (amr pwd); a wrong
// code fails like a wrong password. ID tokens always carry acr, amr and auth_time. A session that
// is not "mfa" must log in again when the authorization request's acr_values include "mfa" (one
// fresh login per request, like max_age: whatever it yields is what the client gets).
//   ignore_acr_values: true   a provider that ignores acr_values: the session is reused as it is
//   ignore_max_age: true      a provider that ignores max_age and prompt=login: the session is
//                             reused however old it is
//   par: "off" | "required"   no pushed authorization requests at all, or only pushed ones
//                             (advertised as require_pushed_authorization_requests)
//   registration: { initial_access_token: "…" }   Dynamic Client Registration at /reg (RFC 7591)
//                             with that initial access token (none: open registration), and its
//                             management (RFC 7592) with rotating registration access tokens;
//                             GET /__test/clients lists the registered clients' metadata
//   registration_delay_ms: n  registrations answer n ms late (a window for racing instances)
//   dpop_nonce: true          DPoP (RFC 9449, on by default) also requires server nonces
//   dpop: false               no DPoP: proofs are ignored and tokens are plain bearer tokens
// A DPoP resource server for tests at /__test/dpop-api/*: it accepts only `Authorization: DPoP`
// with a proof that verifies (jose) for this request (htm, htu, ath, fresh iat, unused jti) by
// the key the access token is bound to (the token's jkt, from this provider's store), and
// answers {"sub", "jkt", "htu"}; anything else is 401 {"error", "reason"}.
// The token broker's counterparts (all optional PROVIDER_CONFIG keys):
//   resources: { "<resource URL>": { "scope": "a b", "format": "jwt" | "opaque" } }
//     client credentials with RFC 8707 resource indicators (`resource`, or `audience` as an
//     alias); the token's aud is the resource. Without either the token is opaque, with no aud.
//   exchange_audiences: { "<audience>": { "scope": "a b" } }
//     RFC 8693 token exchange (urn:ietf:params:oauth:grant-type:token-exchange) for clients with
//     that grant type: a user's access or ID token of this provider for a JWT access token
//     with that aud, the user's sub and act: { sub: <client> }
//   exchange_deny_subjects: ["bob"]   the exchange refuses these users (403 access_denied)
//   exchange_token_ttl: seconds       lifetime of exchanged tokens (default access_token_ttl)
// Any authenticated client may introspect any opaque token; a token is revoked (RFC 7009) at
// /token/revocation by the client it was issued to. JWT access tokens are not stored: they
// can be neither introspected nor revoked (unsupported_token_type).
// Test-only endpoints: GET /__test/stats, POST /__test/reset, POST /__test/faults (a form:
// discovery_delay_ms, token_delay_ms, token_status, token_error; empty values clear them).

import crypto from 'node:crypto';
import http from 'node:http';

import { EmbeddedJWK, base64url, calculateJwkThumbprint, jwtVerify } from 'jose';
import Provider, { errors, interactionPolicy } from 'oidc-provider';

const log = (...args) => console.error('[provider]', ...args);

// ---------------------------------------------------------------------------
// Configuration from the environment
// ---------------------------------------------------------------------------

let config = {};
if (process.env.PROVIDER_CONFIG) {
  try {
    config = JSON.parse(process.env.PROVIDER_CONFIG);
  } catch (err) {
    log('PROVIDER_CONFIG is not valid JSON:', err.message);
    process.exit(2);
  }
}

const positiveInt = (value, fallback) => (Number.isInteger(value) && value > 0 ? value : fallback);

const port = Number.isInteger(config.port) && config.port >= 0 ? config.port : 0;
const accessTokenTtl = positiveInt(config.access_token_ttl, 60);
const idTokenTtl = positiveInt(config.id_token_ttl, 3600);
const refreshTokenTtl = positiveInt(config.refresh_token_ttl, 86400);
const sessionTtl = positiveInt(config.session_ttl, undefined);
const resources = config.resources && typeof config.resources === 'object' ? config.resources : {};
const exchangeAudiences = config.exchange_audiences && typeof config.exchange_audiences === 'object'
  ? config.exchange_audiences : {};
const exchangeDenied = new Set(Array.isArray(config.exchange_deny_subjects) ? config.exchange_deny_subjects : []);
const exchangeTokenTtl = positiveInt(config.exchange_token_ttl, accessTokenTtl);
const ignoreAcrValues = config.ignore_acr_values === true;
const ignoreMaxAge = config.ignore_max_age === true;
// Dynamic Client Registration (RFC 7591/7592), off unless configured.
const registration = config.registration && typeof config.registration === 'object' ? config.registration : null;
// 'off': no pushed authorization requests (RFC 9126); 'required': only pushed ones.
const par = config.par === 'off' || config.par === 'required' ? config.par : 'on';
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const TOKEN_TYPE = {
  access_token: 'urn:ietf:params:oauth:token-type:access_token',
  id_token: 'urn:ietf:params:oauth:token-type:id_token',
  jwt: 'urn:ietf:params:oauth:token-type:jwt',
};

const clients = Array.isArray(config.clients) ? config.clients : [{
  client_id: 'sallyport',
  client_secret: 'sallyport-demo-secret',
  redirect_uris: ['http://localhost:8080/auth/callback'],
  post_logout_redirect_uris: ['http://localhost:8080/'],
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
}];

// ---------------------------------------------------------------------------
// Accounts
// ---------------------------------------------------------------------------

const ACCOUNTS = new Map([
  ['alice', {
    password: 'secret',
    otp: '123456',
    claims: {
      sub: 'alice',
      name: 'Alice Example',
      preferred_username: 'alice',
      email: 'alice@example.com',
      email_verified: true,
      roles: ['admin', 'billing'],
    },
  }],
  ['bob', {
    password: 'secret',
    claims: {
      sub: 'bob',
      name: 'Bob Example',
      email: 'bob@example.com',
      roles: ['viewer'],
    },
  }],
  // Claims crafted to inject headers wherever a gateway copies them into one.
  ['mallory', {
    password: 'secret',
    claims: {
      sub: 'mallory',
      name: 'Mallory\r\nSet-Cookie: sallyport=planted',
      email: 'mallory@example.com\r\nX-Injected: yes',
    },
  }],
]);

const ACR_PWD = 'pwd';
const ACR_MFA = 'mfa';

function secretMatches(given, expected) {
  if (expected === undefined) return false;
  const a = Buffer.from(String(given));
  const b = Buffer.from(expected);
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

// The login result for oidc-provider, or undefined. An empty `otp` is a password-only login.
function authenticate(login, password, otp) {
  const account = ACCOUNTS.get(login);
  if (!account || !secretMatches(password, account.password)) return undefined;
  if (!otp) return { accountId: login, acr: ACR_PWD, amr: ['pwd'] };
  if (!secretMatches(otp, account.otp)) return undefined;
  return { accountId: login, acr: ACR_MFA, amr: ['pwd', 'otp'] };
}

const requestedAcrs = (acrValues) => String(acrValues ?? '').split(' ').filter(Boolean);

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

function signingKeys() {
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return [
    { ...rsa.privateKey.export({ format: 'jwk' }), kid: `rsa-${crypto.randomBytes(6).toString('hex')}`, alg: 'RS256', use: 'sig' },
    { ...ec.privateKey.export({ format: 'jwk' }), kid: `ec-${crypto.randomBytes(6).toString('hex')}`, alg: 'ES256', use: 'sig' },
  ];
}

// ---------------------------------------------------------------------------
// Small HTML helpers
// ---------------------------------------------------------------------------

const escapeHtml = (value) => String(value).replace(/[&<>"']/g, (c) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
}[c]));

const STYLE = 'body{font-family:system-ui,sans-serif;max-width:24rem;margin:3rem auto;padding:0 1rem}'
  + 'label{display:block;margin:.75rem 0 .25rem}input{width:100%;padding:.4rem;box-sizing:border-box}'
  + 'button{margin-top:1rem;padding:.5rem 1rem}.error{color:#b00020}.hint{color:#666;font-size:.9em}';

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>${STYLE}</style>
</head>
<body>
${body}
</body>
</html>
`;
}

function loginPage(uid, clientId, { error, login, mfaRequested } = {}) {
  return page('Sign in', `<h1>Sign in</h1>
<p class="hint">to <strong>${escapeHtml(clientId)}</strong> &mdash; test accounts: alice / secret, bob / secret</p>
${mfaRequested ? '<p class="hint" id="mfa-requested">This sign-in asks for multi-factor authentication: enter your one-time code (alice: 123456).</p>\n' : ''}${error ? `<p class="error" id="error" role="alert">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login">
<label for="login">Username</label>
<input name="login" id="login" value="${escapeHtml(login ?? '')}" autocomplete="username" autofocus required>
<label for="password">Password</label>
<input name="password" id="password" type="password" autocomplete="current-password" required>
<label for="otp">One-time code</label>
<input name="otp" id="otp" inputmode="numeric" autocomplete="one-time-code">
<button type="submit" id="submit">Sign in</button>
</form>`);
}

function send(res, status, contentType, body) {
  res.statusCode = status;
  res.setHeader('Content-Type', contentType);
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(body);
}

const sendHtml = (res, status, body) => send(res, status, 'text/html; charset=utf-8', body);
const sendJson = (res, status, value) => send(res, status, 'application/json', JSON.stringify(value));

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// ---------------------------------------------------------------------------
// Test statistics (grant.success / grant.error per grant_type)
// ---------------------------------------------------------------------------

const stats = {
  grants: {}, grant_errors: {}, faulted_token_requests: 0, discovery_requests: 0,
  registrations: 0, registration_updates: 0, registration_errors: 0, grants_revoked: 0,
};
// The ids of dynamically registered clients.
const registered = new Set();

// Faults a test switches on to play a slow or refusing provider: delays before discovery and the
// token endpoint answer, and a token endpoint that answers `token_status` with `token_error`
// instead of running the grant.
const faults = { discovery_delay_ms: 0, token_delay_ms: 0, token_status: 0, token_error: '' };
const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

// ---------------------------------------------------------------------------
// The DPoP resource server
// ---------------------------------------------------------------------------

const seenProofs = new Set();

async function dpopApi(req, res, url) {
  const refuse = (reason) => sendJson(res, 401, { error: 'invalid_dpop', reason });
  const [scheme, token] = (req.headers.authorization ?? '').split(' ');
  if (scheme !== 'DPoP' || !token) return refuse(`Authorization scheme ${scheme}`);
  const proof = req.headers.dpop;
  if (typeof proof !== 'string') return refuse('no DPoP proof');
  let verified;
  try {
    verified = await jwtVerify(proof, EmbeddedJWK, { typ: 'dpop+jwt', algorithms: ['ES256', 'EdDSA', 'PS256'] });
  } catch (err) {
    return refuse(`proof signature: ${err.message}`);
  }
  const { payload, protectedHeader } = verified;
  const htu = `${issuer}${url.pathname}`;
  if (payload.htm !== req.method) return refuse(`htm ${payload.htm}`);
  if (payload.htu !== htu) return refuse(`htu ${payload.htu}, expected ${htu}`);
  const ath = base64url.encode(crypto.createHash('sha256').update(token).digest());
  if (payload.ath !== ath) return refuse('ath does not match the token');
  if (Math.abs(Date.now() / 1000 - payload.iat) > 60) return refuse('iat not fresh');
  if (typeof payload.jti !== 'string' || seenProofs.has(payload.jti)) return refuse('jti missing or reused');
  seenProofs.add(payload.jti);
  const stored = await provider.AccessToken.find(token);
  if (!stored) return refuse('unknown or expired access token');
  const jkt = await calculateJwkThumbprint(protectedHeader.jwk);
  if (!stored.jkt) return refuse('the access token is not DPoP-bound');
  if (stored.jkt !== jkt) return refuse('the proof key is not the key the token is bound to');
  return sendJson(res, 200, { sub: stored.accountId, jkt, htu });
}

async function faulted(req, res, url) {
  if (url.pathname === '/reg' && req.method === 'POST' && config.registration_delay_ms > 0) {
    await sleep(config.registration_delay_ms);
    return false;
  }
  if (url.pathname === '/.well-known/openid-configuration') {
    stats.discovery_requests += 1;
    if (faults.discovery_delay_ms) await sleep(faults.discovery_delay_ms);
    return false;
  }
  if (url.pathname !== '/token' || req.method !== 'POST') return false;
  if (faults.token_delay_ms) await sleep(faults.token_delay_ms);
  if (!faults.token_status) return false;
  stats.faulted_token_requests += 1;
  req.resume();
  sendJson(res, faults.token_status, faults.token_error ? { error: faults.token_error } : {});
  return true;
}

function count(bucket, ctx) {
  const grantType = ctx?.oidc?.params?.grant_type ?? 'unknown';
  bucket[grantType] = (bucket[grantType] ?? 0) + 1;
}

// ---------------------------------------------------------------------------
// Interaction policy (step-up)
// ---------------------------------------------------------------------------

// oidc-provider treats acr_values as voluntary and reuses any session. This provider asks a
// session that is not "mfa" to log in again when the request's acr_values include "mfa", once
// per request (a login just done in this request stands, as with max_age).
function interactionPolicyFor() {
  const { Check } = interactionPolicy;
  const policy = interactionPolicy.base();
  const login = policy.get('login');
  if (!ignoreAcrValues) {
    // A check added later does not get its prompt's error: login_required is spelled out (what
    // prompt=none answers).
    login.checks.add(new Check('acr_mfa', 'multi-factor authentication was requested', 'login_required', (ctx) => {
      const { oidc } = ctx;
      if (!requestedAcrs(oidc.params.acr_values).includes(ACR_MFA)) return Check.NO_NEED_TO_PROMPT;
      if (oidc.result?.login) return Check.NO_NEED_TO_PROMPT;
      return oidc.session.accountId && oidc.acr === ACR_MFA ? Check.NO_NEED_TO_PROMPT : Check.REQUEST_PROMPT;
    }));
  }
  if (ignoreMaxAge) {
    // prompt=login stays a valid value; it just no longer forces a login.
    login.checks.remove('login_prompt');
    login.checks.remove('max_age');
  }
  return policy;
}

// ---------------------------------------------------------------------------
// Server and provider
// ---------------------------------------------------------------------------

const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: signingKeys() },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url'), crypto.randomBytes(32).toString('base64url')] },

  async findAccount(ctx, id) {
    const account = ACCOUNTS.get(id);
    if (!account) return undefined;
    return {
      accountId: id,
      // oidc-provider filters these by the granted scopes using `claims` below.
      async claims() {
        return { ...account.claims };
      },
    };
  },

  // The step-up levels this provider knows (acr_values_supported).
  acrValues: [ACR_PWD, ACR_MFA],

  // acr, amr and auth_time ride on the openid scope so that every ID token carries them (by
  // default oidc-provider adds acr only for acr_values and auth_time only for max_age,
  // prompt=login or require_auth_time). Userinfo has none of them: the account's claims don't.
  claims: {
    openid: ['sub', 'acr', 'amr', 'auth_time'],
    profile: ['name', 'preferred_username', 'roles'],
    email: ['email', 'email_verified'],
  },

  // Put the scope-granted claims (name, email, ...) into the ID token as well,
  // not only into userinfo, like most real-world providers do.
  conformIdTokenClaims: false,

  interactions: { policy: interactionPolicyFor() },

  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Logins ask for no resource: their access tokens stay opaque, for userinfo. Client
      // credentials take `audience` for `resource`, as many providers do (the grant's own
      // parameters do not include it, so it is read from the raw form).
      async defaultResource(ctx, client, oneOf) {
        if (oneOf) return oneOf;
        if (ctx.oidc.route === 'token' && ctx.oidc.params.grant_type === 'client_credentials') {
          return ctx.oidc.body?.audience || undefined;
        }
        return undefined;
      },
      useGrantedResource: async () => false,
      async getResourceServerInfo(ctx, resourceIndicator) {
        const info = resources[resourceIndicator];
        if (!info) throw new errors.InvalidTarget();
        return {
          scope: info.scope ?? '',
          audience: resourceIndicator,
          accessTokenFormat: info.format === 'opaque' ? 'opaque' : 'jwt',
          accessTokenTTL: accessTokenTtl,
        };
      },
    },
    registration: {
      enabled: registration !== null,
      initialAccessToken: registration?.initial_access_token ?? false,
      issueRegistrationAccessToken: true,
    },
    registrationManagement: { enabled: registration !== null, rotateRegistrationAccessToken: true },
    dPoP: config.dpop_nonce === true
      ? { enabled: true, nonceSecret: crypto.randomBytes(32), requireNonce: () => true }
      : { enabled: config.dpop !== false },
    pushedAuthorizationRequests: {
      enabled: par !== 'off',
      requirePushedAuthorizationRequests: par === 'required',
    },
    revocation: { enabled: true },
    // Any confidential client may introspect any token (the gateway checks machine clients'
    // tokens this way).
    introspection: { enabled: true, allowedPolicy: async () => true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.type = 'html';
        ctx.body = page('Sign out', `<h1>Sign out</h1>
<p>Do you want to sign out of the provider?</p>
${form}
<button type="submit" form="op.logoutForm" name="logout" value="yes" id="logout-confirm" autofocus>Yes, sign me out</button>
<button type="submit" form="op.logoutForm" id="logout-cancel">No, stay signed in</button>`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.type = 'html';
        ctx.body = page('Signed out', '<h1 id="signed-out">Signed out</h1><p>You have been signed out.</p>');
      },
    },
  },

  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', `<h1>Error</h1>${Object.entries(out)
      .map(([key, value]) => `<p><strong>${escapeHtml(key)}</strong>: <span class="${escapeHtml(key)}">${escapeHtml(value)}</span></p>`)
      .join('\n')}`);
  },

  pkce: { required: () => true },

  // The exchanged token says who acts for the user (RFC 8693 §4.1).
  async extraTokenClaims(ctx, token) {
    if (ctx?.oidc?.params?.grant_type !== TOKEN_EXCHANGE) return undefined;
    return { act: { sub: token.clientId } };
  },

  // Issue a refresh token whenever the client may use the refresh_token grant,
  // whether or not offline_access was requested/consented.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  // Rotate on every use: presenting an already rotated refresh token revokes the grant.
  rotateRefreshToken: () => true,

  // Access tokens for a resource server (client credentials, token exchange) live as long as
  // it says; all others access_token_ttl.
  ttl: {
    AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL ?? accessTokenTtl,
    ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL ?? accessTokenTtl,
    IdToken: idTokenTtl,
    RefreshToken: refreshTokenTtl,
    AuthorizationCode: 60,
    Interaction: 3600,
    Grant: Math.max(refreshTokenTtl, 14 * 24 * 3600),
    ...(sessionTtl ? { Session: sessionTtl } : {}),
  },

  // oidc-provider passes an SSRF-protected undici dispatcher in `options.dispatcher`
  // that refuses special-use addresses (127.0.0.0/8 included). The test clients'
  // back-channel logout URIs are on loopback, so drop it and use the default one.
  fetch(url, options) {
    delete options.dispatcher;
    return globalThis.fetch(url, options);
  },
});

// ---------------------------------------------------------------------------
// RFC 8693 token exchange, as a custom grant
// ---------------------------------------------------------------------------

// "This provider refuses this user": 403, unlike the other token endpoint errors.
class AccessDenied extends errors.OIDCProviderError {
  constructor(description) {
    super(403, 'access_denied');
    this.error_description = description;
  }
}

/** One value of a parameter that may be repeated; invalid_target for several. */
function single(value) {
  if (!Array.isArray(value)) return value;
  if (value.length > 1) throw new errors.InvalidTarget('only one audience or resource is supported');
  return value[0];
}

/**
 * The account a subject token of this provider stands for; invalid_grant otherwise. An access
 * token is one this provider stores (opaque) and would introspect as active: not expired, not
 * revoked, its session and grant still there. An ID token must be signed by this provider and
 * issued to the requesting client (its aud), and not be expired.
 */
async function subjectOf(ctx, token, type) {
  const invalid = (why) => new errors.InvalidGrant(`subject_token ${why}`);
  if (type === TOKEN_TYPE.access_token) {
    const found = await provider.AccessToken.find(token);
    if (!found?.isValid || !found.accountId) throw invalid('invalid, expired or revoked');
    if (found.grantId) {
      const grant = await provider.Grant.find(found.grantId);
      if (!grant || grant.clientId !== found.clientId || grant.accountId !== found.accountId) {
        throw invalid('grant revoked');
      }
    }
    return found.accountId;
  }
  if (type === TOKEN_TYPE.id_token) {
    let payload;
    try {
      ({ payload } = await provider.IdToken.validate(token, ctx.oidc.client));
    } catch (err) {
      throw invalid(`invalid (${err.message})`);
    }
    // IdToken.validate ignores exp (it serves id_token_hint).
    if (!payload.exp || payload.exp * 1000 <= Date.now()) throw invalid('expired');
    return payload.sub;
  }
  throw new errors.InvalidRequest('unsupported subject_token_type');
}

async function tokenExchange(ctx) {
  const { client, params } = ctx.oidc;
  // Unreachable in practice: the token endpoint refuses a grant type the client lacks before
  // it gets here (with invalid_request, made unauthorized_client below).
  if (!client.grantTypeAllowed(TOKEN_EXCHANGE)) throw new errors.UnauthorizedClient();
  if (!params.subject_token || !params.subject_token_type) {
    throw new errors.InvalidRequest('subject_token and subject_token_type are required');
  }
  if (params.requested_token_type
    && ![TOKEN_TYPE.access_token, TOKEN_TYPE.jwt].includes(params.requested_token_type)) {
    throw new errors.InvalidRequest('only access tokens are issued');
  }
  const accountId = await subjectOf(ctx, params.subject_token, params.subject_token_type);

  const audience = single(params.audience) ?? single(params.resource);
  const target = audience && Object.hasOwn(exchangeAudiences, audience) ? exchangeAudiences[audience] : undefined;
  if (!target) throw new errors.InvalidTarget('unknown audience');
  const allowed = new Set(String(target.scope ?? '').split(' ').filter(Boolean));
  const requested = params.scope ? [...new Set(params.scope.split(' ').filter(Boolean))] : [...allowed];
  if (requested.some((s) => !allowed.has(s))) throw new errors.InvalidScope('scope not allowed for this audience');
  if (exchangeDenied.has(accountId)) throw new AccessDenied('this user may not have a token for that audience');

  // A JWT access token signed like oidc-provider's own (typ at+jwt, kid of /jwks); its act
  // claim comes from extraTokenClaims.
  const token = new provider.AccessToken({
    accountId,
    client,
    gty: 'token_exchange',
    scope: requested.join(' ') || undefined,
  });
  token.resourceServer = new provider.ResourceServer(audience, {
    audience,
    scope: [...allowed].join(' '),
    accessTokenFormat: 'jwt',
    accessTokenTTL: exchangeTokenTtl,
  });
  ctx.oidc.entity('AccessToken', token);
  const value = await token.save();
  ctx.body = {
    access_token: value,
    issued_token_type: TOKEN_TYPE.access_token,
    token_type: 'Bearer',
    expires_in: token.expiration,
    scope: token.scope,
  };
}

// grant.success and grant.error are emitted for this grant like for the built-in ones.
provider.registerGrantType(
  TOKEN_EXCHANGE,
  tokenExchange,
  ['subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'resource', 'scope', 'actor_token', 'actor_token_type'],
  ['audience', 'resource'],
);

// The token endpoint answers a client without the grant type invalid_request; RFC 6749 §5.2
// says unauthorized_client.
provider.use(async (ctx, next) => {
  await next();
  const { oidc } = ctx;
  if (oidc?.route === 'token' && oidc.params?.grant_type === TOKEN_EXCHANGE && oidc.client
    && !oidc.client.grantTypeAllowed(TOKEN_EXCHANGE) && ctx.body?.error === 'invalid_request') {
    ctx.body = { error: 'unauthorized_client', error_description: 'the client may not exchange tokens' };
  }
});

provider.on('registration_create.success', (ctx, client) => {
  stats.registrations += 1;
  registered.add(client.clientId);
});
provider.on('registration_update.success', (ctx, client) => {
  stats.registration_updates += 1;
});
provider.on('registration_create.error', (ctx, err) => { stats.registration_errors += 1; log('registration refused:', err.message); });
provider.on('registration_update.error', (ctx, err) => { stats.registration_errors += 1; log('registration update refused:', err.message); });
provider.on('pushed_authorization_request.error', (ctx, err) => log('pushed authorization request refused:', err.message, err.error_description ?? ''));
provider.on('grant.revoked', () => { stats.grants_revoked += 1; });
provider.on('grant.success', (ctx) => count(stats.grants, ctx));
provider.on('grant.error', (ctx) => count(stats.grant_errors, ctx));
provider.on('server_error', (ctx, err) => log('server_error:', err));
provider.on('backchannel.success', (ctx, client, accountId, sid) => log(`back-channel logout delivered to ${client.clientId} (sub=${accountId}, sid=${sid})`));
provider.on('backchannel.error', (ctx, err, client) => log(`back-channel logout to ${client.clientId} failed:`, err.message, err.cause?.message ?? ''));

const providerCallback = provider.callback();

// ---------------------------------------------------------------------------
// Interactions (login, automatic consent)
// ---------------------------------------------------------------------------

async function autoConsent(req, res, interaction) {
  const { prompt: { details }, params, session: { accountId } } = interaction;
  const grant = interaction.grantId
    ? await provider.Grant.find(interaction.grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });

  if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
  if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
  if (details.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(details.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

async function handleInteraction(req, res, url) {
  const match = url.pathname.match(/^\/interaction\/([^/]+)(\/login)?\/?$/);
  if (!match) return sendHtml(res, 404, page('Not found', '<h1>Not found</h1>'));
  const [, uid, login] = match;

  let interaction;
  try {
    interaction = await provider.interactionDetails(req, res);
  } catch (err) {
    log('interaction lookup failed:', err.message);
    return sendHtml(res, 400, page('Error', `<h1>Error</h1><p class="error">${escapeHtml(err.message)}</p>`));
  }
  if (interaction.uid !== uid) {
    return sendHtml(res, 400, page('Error', '<h1>Error</h1><p class="error">interaction mismatch</p>'));
  }
  const clientId = interaction.params.client_id;
  const mfaRequested = requestedAcrs(interaction.params.acr_values).includes(ACR_MFA);

  if (req.method === 'GET' && !login) {
    switch (interaction.prompt.name) {
      case 'login':
        return sendHtml(res, 200, loginPage(uid, clientId, { mfaRequested }));
      case 'consent':
        return autoConsent(req, res, interaction);
      default:
        return sendHtml(res, 400, page('Error', `<h1>Error</h1><p class="error">unsupported prompt ${escapeHtml(interaction.prompt.name)}</p>`));
    }
  }

  if (req.method === 'POST' && login) {
    if (interaction.prompt.name !== 'login') {
      return sendHtml(res, 400, page('Error', '<h1>Error</h1><p class="error">not a login prompt</p>'));
    }
    const form = await readForm(req);
    const username = (form.get('login') ?? '').trim();
    const result = authenticate(username, form.get('password') ?? '', (form.get('otp') ?? '').trim());
    if (!result) {
      return sendHtml(res, 200, loginPage(uid, clientId, {
        error: 'Invalid username, password or one-time code.', login: username, mfaRequested,
      }));
    }
    log(`login: ${result.accountId} (acr ${result.acr}) for client ${clientId}`);
    return provider.interactionFinished(req, res, { login: result }, { mergeWithLastSubmission: false });
  }

  res.setHeader('Allow', login ? 'POST' : 'GET');
  return sendHtml(res, 405, page('Method not allowed', '<h1>Method not allowed</h1>'));
}

// ---------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------

server.on('request', async (req, res) => {
  const url = new URL(req.url, issuer);
  try {
    if (url.pathname === '/__test/stats' && req.method === 'GET') {
      return sendJson(res, 200, stats);
    }
    if (url.pathname.startsWith('/__test/dpop-api/')) {
      return await dpopApi(req, res, url);
    }
    if (url.pathname === '/__test/clients' && req.method === 'GET') {
      const found = await Promise.all([...registered].map((id) => provider.Client.find(id)));
      return sendJson(res, 200, Object.fromEntries(found.filter(Boolean).map((c) => [c.clientId, c.metadata()])));
    }
    if (url.pathname === '/__test/faults' && req.method === 'POST') {
      const form = await readForm(req);
      for (const key of Object.keys(faults)) {
        const value = form.get(key) ?? '';
        faults[key] = key === 'token_error' ? value : Number(value || 0);
      }
      return sendJson(res, 200, faults);
    }
    if (await faulted(req, res, url)) return undefined;
    if (url.pathname === '/__test/reset' && req.method === 'POST') {
      stats.grants = {};
      stats.grant_errors = {};
      return sendJson(res, 200, stats);
    }
    if (url.pathname.startsWith('/interaction/')) {
      return await handleInteraction(req, res, url);
    }
    return providerCallback(req, res);
  } catch (err) {
    log('request failed:', err);
    if (!res.headersSent) return sendHtml(res, 500, page('Error', '<h1>Internal error</h1>'));
    return res.destroy();
  }
});

function shutdown(signal) {
  log(`${signal} received, shutting down`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

log(`listening on ${issuer} (clients: ${clients.map((c) => c.client_id).join(', ')})`);
process.stdout.write(`${JSON.stringify({ issuer })}\n`);

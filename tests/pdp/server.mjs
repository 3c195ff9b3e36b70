// An OpenID AuthZEN 1.0 policy decision point for Sallyport's integration tests, deciding with
// Cedar (@cedar-policy/cedar-wasm, the engine of cedar-policy compiled to WebAssembly).
//
//   PDP_POLICIES=tests/pdp/policies.cedar [PDP_BEARER=secret] node tests/pdp/server.mjs
//
// Listens on 127.0.0.1, on a free port. Prints exactly one JSON line to stdout when ready:
// {"url":"http://127.0.0.1:<port>"}. Everything else goes to stderr. Exits cleanly on
// SIGTERM/SIGINT.
//
// PDP_POLICIES   a Cedar policy file (static policies only, no templates), read once at start
// PDP_BEARER     when set, /access/* requests need `Authorization: Bearer <it>` (401 otherwise)
// PDP_PORT       the port (default: a free one; the load benchmark fixes it)
//
// Endpoints:
//   POST /access/v1/evaluation     {subject, action, resource, context?} -> {decision, context?}
//   POST /access/v1/evaluations    defaults + `evaluations: [...]` -> {evaluations: [...]}
//   GET  /.well-known/authzen-configuration
//
// AuthZEN -> Cedar (the contract Sallyport's embedded engine, src/authz/embedded.rs, follows):
//   principal  <subject.type>::"<subject.id>", attributes: subject.properties
//   action     Action::"<action.name>"
//   resource   <resource.type>::"<resource.id>", attributes: resource.properties (or none)
//   context    the AuthZEN context
// JSON values become Cedar values: strings, booleans and integers as they are, arrays sets,
// objects records; null and fractions are left out. The entities are the principal and the
// resource, without parents; there is no schema. Allow is `true`; Deny, or a request Cedar
// refuses, is `false`. A denial carries `context.reason_user` ({"en": …}) when a policy that
// decided it has a `@reason_user("…")` annotation, and `context.reason_admin` ({"en": …}: the
// deciding policies' ids and the evaluation errors) whenever there is something to say.
// Policy ids are Cedar's own: `policy<N>` for the N-th policy of the file, from 0.
//
// Test-only endpoints (no authentication):
//   GET  /__test/stats     {evaluations, requests: [last 200 bodies], authorizations: [...]}
//   POST /__test/reset     zeroes the stats
//   POST /__test/delay     {"ms": n}: every later AuthZEN answer waits n ms
//   POST /__test/garbage   {"on": bool}: AuthZEN endpoints answer 200 with a non-JSON body
// Every request to /access/* is recorded (its body, its Authorization header or "") before
// anything else, even when PDP_BEARER refuses it; `evaluations` counts the questions decided
// (one per item of a batch).

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';

import * as cedar from '@cedar-policy/cedar-wasm/nodejs';

const log = (...args) => console.error('[pdp]', ...args);

// ---------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------

const policiesPath = process.env.PDP_POLICIES;
if (!policiesPath) {
  log('PDP_POLICIES (a Cedar policy file) is required');
  process.exit(2);
}
let policyText;
try {
  policyText = fs.readFileSync(policiesPath, 'utf8');
} catch (err) {
  log(`cannot read ${policiesPath}:`, err.message);
  process.exit(2);
}

const failure = (answer) => answer.errors.map((e) => e.message).join('; ');

// The policies by id, with their annotations. cedar-wasm has no call that gives a policy set's
// ids with its policies: policySetTextToParts gives the policies' texts sorted by id as strings
// (policy0, policy1, policy10, policy11, policy2, …), so the ids are those of the file's order,
// sorted the same way. Handing Cedar a record of id -> text keeps its ids, which are what
// `diagnostics.reason` names. (An array of texts is refused: each text parses as `policy0`.)
const parts = cedar.policySetTextToParts(policyText);
if (parts.type !== 'success') {
  log(`${policiesPath} is not a Cedar policy set:`, failure(parts));
  process.exit(2);
}
if (parts.policy_templates.length > 0) {
  log(`${policiesPath} holds templates; this PDP evaluates static policies only`);
  process.exit(2);
}
const ids = parts.policies.map((_, i) => `policy${i}`).sort();
const staticPolicies = {};
const annotations = new Map();
parts.policies.forEach((text, i) => {
  const json = cedar.policyToJson(text);
  if (json.type !== 'success') {
    log(`policy ${ids[i]} does not convert to JSON:`, failure(json));
    process.exit(2);
  }
  staticPolicies[ids[i]] = text;
  annotations.set(ids[i], json.json.annotations ?? {});
});
const policyIndex = (id) => Number(id.replace(/^policy/, ''));
log(`${parts.policies.length} policies from ${policiesPath}; Cedar ${cedar.getCedarVersion()}`);

// ---------------------------------------------------------------------------
// AuthZEN -> Cedar
// ---------------------------------------------------------------------------

class BadRequest extends Error {}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

// A JSON value as Cedar JSON, or undefined when it has none (null, fractions).
function cedarValue(v) {
  if (typeof v === 'string' || typeof v === 'boolean') return v;
  if (typeof v === 'number') return Number.isSafeInteger(v) ? v : undefined;
  if (Array.isArray(v)) return v.map(cedarValue).filter((x) => x !== undefined);
  if (isObject(v)) return cedarRecord(v);
  return undefined;
}

function cedarRecord(obj) {
  const out = {};
  for (const [k, v] of Object.entries(obj)) {
    const c = cedarValue(v);
    if (c !== undefined) out[k] = c;
  }
  return out;
}

// `question[key]` as {type, id, properties} (subject, resource) or {name} (action).
function entityOf(question, key) {
  const e = question[key];
  if (!isObject(e)) throw new BadRequest(`${key} must be an object`);
  if (key === 'action') {
    if (typeof e.name !== 'string' || e.name === '') throw new BadRequest('action.name must be a non-empty string');
  } else {
    for (const f of ['type', 'id']) {
      if (typeof e[f] !== 'string' || e[f] === '') throw new BadRequest(`${key}.${f} must be a non-empty string`);
    }
  }
  if (e.properties !== undefined && !isObject(e.properties)) throw new BadRequest(`${key}.properties must be an object`);
  return e;
}

// The AuthZEN answer to one question: {decision, context?}. Throws BadRequest.
function decide(question) {
  const subject = entityOf(question, 'subject');
  const action = entityOf(question, 'action');
  const resource = entityOf(question, 'resource');
  if (question.context !== undefined && !isObject(question.context)) throw new BadRequest('context must be an object');

  const principal = { type: subject.type, id: subject.id };
  const target = { type: resource.type, id: resource.id };
  const answer = cedar.isAuthorized({
    principal,
    action: { type: 'Action', id: action.name },
    resource: target,
    context: cedarRecord(question.context ?? {}),
    policies: { staticPolicies },
    entities: [
      { uid: principal, attrs: cedarRecord(subject.properties ?? {}), parents: [] },
      { uid: target, attrs: cedarRecord(resource.properties ?? {}), parents: [] },
    ],
  });
  evaluations += 1;

  // A request Cedar refuses (a type that is not a Cedar name, the principal and the resource
  // being the same entity, …) is denied.
  if (answer.type !== 'success') {
    return { decision: false, context: { reason_admin: { en: `request refused: ${failure(answer)}` } } };
  }
  const { decision, diagnostics } = answer.response;
  if (decision === 'allow') return { decision: true };

  const deciding = [...diagnostics.reason].sort((a, b) => policyIndex(a) - policyIndex(b));
  const admin = [];
  if (deciding.length > 0) admin.push(`denied by ${deciding.join(', ')}`);
  for (const e of diagnostics.errors) admin.push(`error in ${e.policyId}: ${e.error.message}`);
  if (admin.length === 0) return { decision: false };
  const context = { reason_admin: { en: admin.join('; ') } };
  const reason = deciding
    .map((id) => annotations.get(id)?.reason_user)
    .find((text) => typeof text === 'string' && text !== '');
  if (reason !== undefined) context.reason_user = { en: reason };
  return { decision: false, context };
}

// The questions of a batch: the top-level subject, action, resource and context are defaults
// that each item of `evaluations` may replace.
function batch(body) {
  if (body.evaluations === undefined || (Array.isArray(body.evaluations) && body.evaluations.length === 0)) {
    return null;
  }
  if (!Array.isArray(body.evaluations)) throw new BadRequest('evaluations must be an array');
  return body.evaluations.map((item, i) => {
    if (!isObject(item)) throw new BadRequest(`evaluations[${i}] must be an object`);
    const question = {};
    for (const key of ['subject', 'action', 'resource', 'context']) {
      const value = item[key] !== undefined ? item[key] : body[key];
      if (value !== undefined) question[key] = value;
    }
    // Check every item before deciding any: a bad batch is refused whole.
    try {
      for (const key of ['subject', 'action', 'resource']) entityOf(question, key);
      if (question.context !== undefined && !isObject(question.context)) throw new BadRequest('context must be an object');
    } catch (err) {
      throw err instanceof BadRequest ? new BadRequest(`evaluations[${i}]: ${err.message}`) : err;
    }
    return question;
  });
}

// The batch's answers under `options.evaluations_semantic` (AuthZEN §7.1.2): all of them, or
// up to the first denial or permit.
function decideAll(questions, semantic) {
  const answers = [];
  for (const q of questions) {
    const a = decide(q);
    answers.push(a);
    if (semantic === 'deny_on_first_deny' && !a.decision) break;
    if (semantic === 'permit_on_first_permit' && a.decision) break;
  }
  return answers;
}

// ---------------------------------------------------------------------------
// Test controls and stats
// ---------------------------------------------------------------------------

const MAX_RECORDED = 200;
const MAX_BODY = 1024 * 1024;
let evaluations = 0;
let requests = [];
let authorizations = [];
let delayMs = 0;
let garbage = false;

function record(body, authorization) {
  let parsed;
  try {
    parsed = JSON.parse(body);
  } catch {
    parsed = body; // kept as text
  }
  requests.push(parsed);
  authorizations.push(authorization ?? '');
  if (requests.length > MAX_RECORDED) requests = requests.slice(-MAX_RECORDED);
  if (authorizations.length > MAX_RECORDED) authorizations = authorizations.slice(-MAX_RECORDED);
}

function bearerOk(authorization) {
  const expected = process.env.PDP_BEARER;
  if (!expected) return true;
  const a = Buffer.from(String(authorization ?? ''));
  const b = Buffer.from(`Bearer ${expected}`);
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function send(res, status, body, headers = {}) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

const error = (res, status, code, description, headers) =>
  send(res, status, { error: code, error_description: description }, headers);

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

const EVALUATION = '/access/v1/evaluation';
const EVALUATIONS = '/access/v1/evaluations';

// An AuthZEN request: recorded, then (after the configured delay) answered.
async function authzen(req, res, path) {
  const body = await readBody(req);
  record(body, req.headers.authorization);
  const wait = delayMs;
  if (wait > 0) await sleep(wait);

  if (garbage) {
    send(res, 200, '<html>this is not an AuthZEN decision', { 'content-type': 'application/json' });
    return;
  }
  if (!bearerOk(req.headers.authorization)) {
    error(res, 401, 'unauthorized', 'a valid bearer token is required', {
      'www-authenticate': 'Bearer realm="pdp"',
    });
    return;
  }
  if (req.method !== 'POST') {
    error(res, 405, 'method_not_allowed', 'use POST', { allow: 'POST' });
    return;
  }
  let question;
  try {
    question = JSON.parse(body);
  } catch {
    error(res, 400, 'invalid_request', 'the body is not JSON');
    return;
  }
  if (!isObject(question)) {
    error(res, 400, 'invalid_request', 'the body must be a JSON object');
    return;
  }
  const requestId = req.headers['x-request-id'];
  const echo = requestId ? { 'x-request-id': String(requestId) } : {};
  try {
    if (path === EVALUATION) {
      send(res, 200, decide(question), echo);
      return;
    }
    const questions = batch(question);
    if (questions === null) {
      send(res, 200, decide(question), echo); // no items: a single evaluation (AuthZEN §7.1)
      return;
    }
    const semantic = question.options?.evaluations_semantic;
    send(res, 200, { evaluations: decideAll(questions, semantic) }, echo);
  } catch (err) {
    if (!(err instanceof BadRequest)) throw err;
    error(res, 400, 'invalid_request', err.message);
  }
}

async function testControl(req, res, path) {
  if (path === '/__test/stats' && req.method === 'GET') {
    send(res, 200, { evaluations, requests, authorizations });
    return;
  }
  if (req.method !== 'POST') {
    error(res, 405, 'method_not_allowed', 'use POST', { allow: 'POST' });
    return;
  }
  let body = {};
  const text = await readBody(req);
  if (text.trim() !== '') {
    try {
      body = JSON.parse(text);
    } catch {
      error(res, 400, 'invalid_request', 'the body is not JSON');
      return;
    }
  }
  if (path === '/__test/reset') {
    evaluations = 0;
    requests = [];
    authorizations = [];
  } else if (path === '/__test/delay') {
    if (!Number.isInteger(body?.ms) || body.ms < 0) {
      error(res, 400, 'invalid_request', 'ms must be a non-negative integer');
      return;
    }
    delayMs = body.ms;
    log(`answers delayed by ${delayMs} ms`);
  } else if (path === '/__test/garbage') {
    if (typeof body?.on !== 'boolean') {
      error(res, 400, 'invalid_request', 'on must be a boolean');
      return;
    }
    garbage = body.on;
    log(`garbage answers ${garbage ? 'on' : 'off'}`);
  } else {
    error(res, 404, 'not_found', 'no such test control');
    return;
  }
  res.writeHead(204);
  res.end();
}

const server = http.createServer(async (req, res) => {
  const path = new URL(req.url, 'http://pdp').pathname;
  const { port } = server.address();
  const base = `http://127.0.0.1:${port}`;
  try {
    if (path.startsWith('/access/')) {
      if (path === EVALUATION || path === EVALUATIONS) {
        await authzen(req, res, path);
      } else {
        record(await readBody(req), req.headers.authorization);
        error(res, 404, 'not_found', 'no such AuthZEN endpoint');
      }
    } else if (path.startsWith('/__test/')) {
      await testControl(req, res, path);
    } else if (path === '/.well-known/authzen-configuration' && req.method === 'GET') {
      send(res, 200, {
        policy_decision_point: base,
        access_evaluation_endpoint: `${base}${EVALUATION}`,
        access_evaluations_endpoint: `${base}${EVALUATIONS}`,
      });
    } else {
      error(res, 404, 'not_found', 'no such endpoint');
    }
  } catch (err) {
    log('request failed:', err);
    if (!res.headersSent) error(res, err.message === 'body too large' ? 413 : 500, 'server_error', err.message);
    else res.destroy();
  }
});

server.listen(Number(process.env.PDP_PORT) || 0, '127.0.0.1', () => {
  const { port } = server.address();
  process.stdout.write(`${JSON.stringify({ url: `http://127.0.0.1:${port}` })}\n`);
  log(`listening on 127.0.0.1:${port}${process.env.PDP_BEARER ? ' (bearer required)' : ''}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections?.();
    process.exit(0);
  });
}

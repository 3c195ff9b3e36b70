// The stack for Sallyport's Chromium end-to-end tests, everything on 127.0.0.1 with ports
// chosen at run time:
//
//   - the test OpenID provider (tests/provider/server.mjs, oidc-provider) on http://127.0.0.1:<P>
//   - an upstream: a recording echo in this process (it keeps the raw Authorization header the
//     gateway sent, and answers like examples/demo/echo.mjs, token redacted), or the demo echo
//   - Sallyport itself (the built binary) on http://localhost:<GW>, serving the demo SPA, with
//     the demo's routes: /api/orders/{id}/* authorized by examples/demo/policies.cedar (embedded
//     Cedar engine) besides /api/echo/*, and /api/billing/*, /api/reports/* for brokered tokens
//   - a "dev server" page on http://localhost:<DEV> (the allowed CORS origin, same site)
//   - an "attacker" page on http://127.0.0.1:<ATT> (another site)
//
// Every child process is stopped by its PID: by `stack.stop()`, on SIGINT/SIGTERM, and at exit.
//
// Environment:
//   SALLYPORT_BIN  the gateway binary (default <repo>/target/debug/sallyport: run `cargo build`)
//   CHROMIUM       the browser (default /usr/bin/chromium; never downloaded)
//   E2E_SPA_DIST   a built SPA folder to serve instead of <repo>/examples/demo/spa/dist

import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** How long any single wait may take. */
export const WAIT_MS = 20_000;

export const CLIENT_SECRET = 'e2e-secret';

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--disable-sync',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
];

/** A JWT-looking string (header.payload). */
export const JWT_RE = /eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}/g;

// ---------------------------------------------------------------------------------------------
// Child processes: tracked by PID, killed on every way out
// ---------------------------------------------------------------------------------------------

const children = new Set();
const tempDirs = new Set();

function killAllNow(signal = 'SIGKILL') {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, signal);
      } catch {
        // already gone
      }
    }
  }
}

process.once('exit', () => {
  killAllNow();
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true });
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    killAllNow();
    process.exit(signal === 'SIGINT' ? 130 : 143);
  });
}

class Proc {
  constructor(name, command, args, { env = {}, cwd = REPO } = {}) {
    this.name = name;
    this.lines = [];
    this.child = spawn(command, args, {
      cwd,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(this.child);
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        children.delete(this.child);
        resolve({ code, signal });
      });
      this.child.once('error', (err) => {
        this.lines.push(`[spawn error] ${err.message}`);
        children.delete(this.child);
        resolve({ code: null, signal: null, error: err });
      });
    });
    this.lineListeners = [];
    // Keep reading both pipes for the whole life of the process (a closed pipe would kill it
    // with EPIPE); keep the last lines for diagnostics.
    for (const stream of [this.child.stdout, this.child.stderr]) {
      let buffered = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk) => {
        buffered += chunk;
        let nl;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          this.lines.push(line);
          if (this.lines.length > 300) this.lines.shift();
          for (const listener of this.lineListeners) listener(line, stream === this.child.stdout);
        }
      });
    }
  }

  get pid() {
    return this.child.pid;
  }

  get running() {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  tail(n = 40) {
    return this.lines.slice(-n).map((l) => `  [${this.name}] ${l}`).join('\n');
  }

  /** Resolves with the first stdout line for which `pick` returns a value. */
  waitForLine(pick, what, timeout = WAIT_MS) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(new Error(`${this.name}: no ${what} within ${timeout} ms\n${this.tail()}`)), timeout);
      const listener = (line, isStdout) => {
        if (!isStdout) return;
        const value = pick(line);
        if (value !== undefined) done(null, value);
      };
      const done = (err, value) => {
        clearTimeout(timer);
        this.lineListeners = this.lineListeners.filter((l) => l !== listener);
        if (err) reject(err);
        else resolve(value);
      };
      this.lineListeners.push(listener);
      this.exited.then(({ code, signal, error }) => done(new Error(
        `${this.name} exited (${error ? error.message : `code ${code}, signal ${signal}`}) before printing its ${what}\n${this.tail()}`,
      )));
    });
  }

  /** SIGTERM by PID, then SIGKILL after a grace period. */
  async stop(grace = 5_000) {
    if (!this.running) return;
    try {
      process.kill(this.pid, 'SIGTERM');
    } catch {
      return;
    }
    const timer = setTimeout(() => {
      try {
        if (this.running) process.kill(this.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }, grace);
    await this.exited;
    clearTimeout(timer);
  }
}

/** Runs a command to completion (bounded), failing with its output. */
async function run(name, command, args, { cwd = REPO, timeout = 300_000 } = {}) {
  const proc = new Proc(name, command, args, { cwd });
  const timer = setTimeout(() => proc.stop(1_000), timeout);
  const { code, error } = await proc.exited;
  clearTimeout(timer);
  if (code !== 0) {
    throw new Error(`${name} failed (${error ? error.message : `exit ${code}`}): ${command} ${args.join(' ')} in ${cwd}\n${proc.tail(60)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------------------------

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value; fails after `timeout` with `message()`. */
export async function waitUntil(fn, { timeout = WAIT_MS, interval = 100, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value;
      last = undefined;
    } catch (err) {
      if (err.fatal) throw err;
      last = err;
    }
    if (Date.now() > deadline) {
      const detail = typeof message === 'function' ? await message() : message;
      throw new Error(`timed out after ${timeout} ms waiting for ${detail}${last ? ` (last error: ${last.message})` : ''}`);
    }
    await sleep(interval);
  }
}

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Starts an in-process HTTP server on 127.0.0.1 (port 0 = any free one). */
function listen(handler, port = 0) {
  return new Promise((resolve, reject) => {
    const server = http.createServer(handler);
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

function closeServer(server) {
  if (!server) return Promise.resolve();
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/** The fingerprint examples/demo/echo.mjs shows for a bearer token. */
export function fingerprint(token) {
  return createHash('sha256').update(token).digest('hex').slice(0, 12);
}

function redact(authorization) {
  const [scheme, ...rest] = authorization.split(' ');
  const token = rest.length ? rest.join(' ') : scheme;
  return `${rest.length ? scheme : 'Bearer'} <redacted sha256:${fingerprint(token)}>`;
}

// ---------------------------------------------------------------------------------------------
// The pieces of the stack
// ---------------------------------------------------------------------------------------------

/**
 * A recording upstream: answers like examples/demo/echo.mjs (JSON of what it received, the
 * bearer token redacted) and keeps every request with its raw Authorization header.
 */
async function startRecordingEcho() {
  const requests = [];
  const server = await listen((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url, 'http://upstream');
      requests.push({
        at: Date.now(),
        method: req.method,
        path: url.pathname,
        query: Object.fromEntries(url.searchParams),
        authorization: req.headers.authorization,
        headers: { ...req.headers },
        body: Buffer.concat(chunks).toString('utf8'),
      });
      const headers = { ...req.headers };
      if (headers.authorization !== undefined) headers.authorization = redact(headers.authorization);
      const body = JSON.stringify({ method: req.method, path: url.pathname, query: Object.fromEntries(url.searchParams), headers }, null, 2);
      res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', 'Content-Length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    /** Every distinct bearer token the upstream received. */
    tokens(since = 0) {
      return [...new Set(requests.filter((r) => r.at >= since && r.authorization?.startsWith('Bearer '))
        .map((r) => r.authorization.slice('Bearer '.length)))];
    },
    stop: () => closeServer(server),
  };
}

/** examples/demo/echo.mjs as a child process. */
async function startDemoEcho() {
  const port = await freePort();
  const proc = new Proc('echo', process.execPath, [path.join(REPO, 'examples/demo/echo.mjs')], { env: { PORT: String(port) } });
  const url = `http://127.0.0.1:${port}`;
  await waitUntil(async () => {
    if (!proc.running) throw Object.assign(new Error(`demo echo exited\n${proc.tail()}`), { fatal: true });
    return (await fetch(`${url}/ready`)).ok;
  }, { message: `the demo echo on ${url}` });
  return { url, requests: [], tokens: () => [], proc, stop: () => proc.stop() };
}

async function ensureProviderInstalled() {
  if (fs.existsSync(path.join(REPO, 'tests/provider/node_modules/oidc-provider/package.json'))) return;
  await run('npm ci (provider)', 'npm', ['ci', '--prefix', 'tests/provider', '--no-audit', '--no-fund', '--loglevel=error']);
}

async function startProvider(gwOrigin) {
  await ensureProviderInstalled();
  const config = {
    port: 0,
    access_token_ttl: 120,
    // The token broker's services: an exchange for billing-api, client credentials for reports.
    resources: { 'https://reports.example.com': { scope: 'reports' } },
    exchange_audiences: { 'billing-api': { scope: 'billing.read' } },
    clients: [{
      client_id: 'sallyport',
      client_secret: CLIENT_SECRET,
      redirect_uris: [`${gwOrigin}/auth/callback`],
      post_logout_redirect_uris: [`${gwOrigin}/`],
      grant_types: ['authorization_code', 'refresh_token', 'client_credentials',
        'urn:ietf:params:oauth:grant-type:token-exchange'],
      response_types: ['code'],
    }],
  };
  const proc = new Proc('provider', process.execPath, ['--dns-result-order=ipv4first', 'tests/provider/server.mjs'], {
    env: { PROVIDER_CONFIG: JSON.stringify(config) },
  });
  const issuer = await proc.waitForLine((line) => {
    try {
      return JSON.parse(line).issuer;
    } catch {
      return undefined;
    }
  }, 'issuer line');
  return { issuer, proc };
}

/** The built demo SPA: E2E_SPA_DIST, or examples/demo/spa/dist (built here when missing). */
async function ensureSpa() {
  if (process.env.E2E_SPA_DIST) {
    const dir = path.resolve(process.env.E2E_SPA_DIST);
    if (!fs.existsSync(path.join(dir, 'index.html'))) throw new Error(`E2E_SPA_DIST=${dir} has no index.html`);
    return dir;
  }
  const spa = path.join(REPO, 'examples/demo/spa');
  const dist = path.join(spa, 'dist');
  if (fs.existsSync(path.join(dist, 'index.html'))) return dist;
  if (!fs.existsSync(path.join(spa, 'package.json'))) {
    throw new Error(`the demo SPA is missing: neither ${dist}/index.html nor ${spa}/package.json exists `
      + '(build it with `npm ci && npm run build` in examples/demo/spa, or set E2E_SPA_DIST to a built SPA)');
  }
  await run('npm ci (spa)', 'npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: spa });
  await run('npm run build (spa)', 'npm', ['run', 'build'], { cwd: spa });
  if (!fs.existsSync(path.join(dist, 'index.html'))) throw new Error(`\`npm run build\` in ${spa} made no dist/index.html`);
  return dist;
}

function gatewayBinary() {
  const bin = process.env.SALLYPORT_BIN || path.join(REPO, 'target/debug/sallyport');
  if (!fs.existsSync(bin)) {
    throw new Error(`the Sallyport binary ${bin} does not exist: run \`cargo build\` in ${REPO} first (or set SALLYPORT_BIN)`);
  }
  return bin;
}

const q = (s) => JSON.stringify(String(s)); // a YAML double-quoted scalar

/** The demo's Cedar policies, which the gateway evaluates in process for /api/orders/{id}/*. */
export const DEMO_POLICIES = path.join(REPO, 'examples/demo/policies.cedar');

async function startGateway({ bin, gwPort, issuer, echoUrl, spaDir, devOrigin, dir }) {
  const configPath = path.join(dir, 'sallyport.yaml');
  fs.writeFileSync(configPath, `server: { listen: ${q(`127.0.0.1:${gwPort}`)}, public_url: ${q(`http://localhost:${gwPort}`)} }
providers:
  main: { issuer: ${q(issuer)}, client_id: sallyport, client_secret: "\${SALLYPORT_CLIENT_SECRET}" }
session: { keys: ["\${SALLYPORT_SESSION_KEY}"] }
services:
  echo: { url: ${q(echoUrl)}, token: user }
  billing: { url: ${q(echoUrl)}, token: { kind: exchange, audience: billing-api, scopes: [billing.read] } }
  reports: { url: ${q(echoUrl)}, token: { kind: client_credentials, resource: "https://reports.example.com", scopes: [reports] } }
authz: { policies: ${q(DEMO_POLICIES)} }
routes:
  - { path: /api/echo/*, service: echo, upstream_path: /echo/* }
  - { path: /api/billing/*, service: billing, upstream_path: /billing/* }
  - { path: /api/reports/*, service: reports, upstream_path: /reports/* }
  - path: /api/orders/{id}/*
    service: echo
    upstream_path: /echo/orders/{id}/*
    authz: { pdp: embedded, resource: { type: order, id: "{id}" } }
static: { dir: ${q(spaDir)}, spa_fallback: index.html }
cors: { allowed_origins: [${q(devOrigin)}] }
`);
  const proc = new Proc('sallyport', bin, ['--config', configPath], {
    env: {
      SALLYPORT_CLIENT_SECRET: CLIENT_SECRET,
      SALLYPORT_SESSION_KEY: randomBytes(32).toString('base64'),
      RUST_LOG: process.env.RUST_LOG || 'warn',
    },
  });
  const ready = `http://127.0.0.1:${gwPort}/auth/ready`;
  await waitUntil(async () => {
    if (!proc.running) throw Object.assign(new Error('exited'), { fatal: true });
    const res = await fetch(ready, { signal: AbortSignal.timeout(2_000) });
    return res.status === 200;
  }, { message: () => `${ready} to answer 200\n${proc.tail()}` }).catch((err) => {
    throw new Error(`Sallyport did not become ready: ${err.message}\n${proc.tail()}`);
  });
  return { proc, configPath };
}

const BLANK = '<!doctype html><html><head><meta charset="utf-8"><title>blank</title></head><body><p>blank page</p></body></html>';

/** A page server for an origin of our own: `/` (or any path) is a blank page. */
async function startPageServer(pages = {}, port = 0) {
  const server = await listen((req, res) => {
    const url = new URL(req.url, 'http://x');
    const html = pages[url.pathname] ?? BLANK;
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
    res.end(html);
  }, port);
  return { port: server.address().port, stop: () => closeServer(server) };
}

function attackerPage(gwOrigin) {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>totally legit</title></head>
<body>
<h1>You won a prize</h1>
<form id="evil" method="post" action="${gwOrigin}/api/echo/transfer">
  <input type="text" name="amount" value="1000000">
  <input type="text" name="to" value="mallory">
</form>
<script>addEventListener('load', () => document.getElementById('evil').submit());</script>
</body></html>`;
}

// ---------------------------------------------------------------------------------------------
// The whole stack
// ---------------------------------------------------------------------------------------------

/**
 * Starts provider, upstream, Sallyport, the dev-origin and attacker page servers.
 * `upstream`: 'recording' (default; an in-process echo that keeps the raw tokens) or 'demo'
 * (examples/demo/echo.mjs).
 */
export async function startStack({ upstream = 'recording' } = {}) {
  const parts = [];
  const stack = {
    async stop() {
      // Reverse order: gateway first, then what it depends on.
      for (const part of parts.reverse()) {
        try {
          await part.stop();
        } catch {
          // keep stopping the rest
        }
      }
      parts.length = 0;
      if (stack.dir) {
        fs.rmSync(stack.dir, { recursive: true, force: true });
        tempDirs.delete(stack.dir);
      }
    },
  };
  try {
    const bin = gatewayBinary();
    const spaDir = await ensureSpa();
    stack.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sallyport-e2e-'));
    tempDirs.add(stack.dir);

    const gwPort = await freePort();
    stack.gwPort = gwPort;
    stack.gw = `http://localhost:${gwPort}`;

    const provider = await startProvider(stack.gw);
    parts.push(provider.proc);
    stack.issuer = provider.issuer;
    stack.provider = provider.proc;

    const echo = upstream === 'demo' ? await startDemoEcho() : await startRecordingEcho();
    parts.push(echo);
    stack.echo = echo;

    const dev = await startPageServer();
    parts.push(dev);
    stack.devOrigin = `http://localhost:${dev.port}`;

    const attacker = await startPageServer({ '/': attackerPage(stack.gw) });
    parts.push(attacker);
    stack.attackerOrigin = `http://127.0.0.1:${attacker.port}`;

    const gateway = await startGateway({
      bin, gwPort, issuer: stack.issuer, echoUrl: echo.url, spaDir, devOrigin: stack.devOrigin, dir: stack.dir,
    });
    parts.push(gateway.proc);
    stack.gateway = gateway.proc;
    stack.spaDir = spaDir;

    stack.logs = (n = 40) => [provider.proc.tail(n), gateway.proc.tail(n), echo.proc?.tail(n)].filter(Boolean).join('\n');
    return stack;
  } catch (err) {
    await stack.stop();
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// The browser and page helpers
// ---------------------------------------------------------------------------------------------

/**
 * Launches the system Chromium. Playwright's own `--disable-back-forward-cache` is dropped so
 * the back button behaves as in a real browser (pages may come back from the bfcache).
 */
export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: CHROMIUM_ARGS,
    ignoreDefaultArgs: ['--disable-back-forward-cache'],
    timeout: WAIT_MS,
  });
}

/** The trimmed text of `selector`, or null when absent. */
export async function text(page, selector) {
  const el = await page.$(selector);
  if (!el) return null;
  return (await el.textContent())?.trim() ?? '';
}

/** Waits until `#status` reads `expected` (e.g. 'Signed in'). */
export async function waitForStatus(page, expected, timeout = WAIT_MS) {
  await waitUntil(async () => (await text(page, '#status')) === expected, {
    timeout,
    message: async () => `#status to be ${JSON.stringify(expected)} on ${page.url()} `
      + `(is ${JSON.stringify(await text(page, '#status').catch(() => '?'))}, #error ${JSON.stringify(await text(page, '#error').catch(() => '?'))})`,
  });
}

/** Whether `selector` is missing, hidden, or empty. */
export async function emptyOrHidden(page, selector) {
  const el = await page.$(selector);
  if (!el) return true;
  if (!(await el.isVisible())) return true;
  return ((await el.textContent()) ?? '').trim() === '';
}

/**
 * From a signed-out SPA page on the gateway: clicks `#login`, signs in on the provider's form,
 * and waits until the SPA shows "Signed in".
 */
export async function signIn(page, stack, { user = 'alice', password = 'secret' } = {}) {
  await waitForStatus(page, 'Signed out');
  await page.click('#login');
  await page.waitForURL((url) => url.href.startsWith(`${stack.issuer}/interaction/`), { timeout: WAIT_MS });
  await page.fill('#login', user);
  await page.fill('#password', password);
  await Promise.all([
    page.waitForURL((url) => url.href.startsWith(`${stack.gw}/`) && !url.pathname.startsWith('/auth/'), { timeout: WAIT_MS }),
    page.click('#submit'),
  ]);
  await waitForStatus(page, 'Signed in');
}

/** Opens the gateway's `/` in a fresh page of `context` and signs in. */
export async function signedInPage(context, stack, opts) {
  const page = await context.newPage();
  await page.goto(`${stack.gw}/`);
  await signIn(page, stack, opts);
  return page;
}

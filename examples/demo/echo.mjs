// Demo upstream API for Sallyport: replies 200 with a JSON description of the
// request it received. The bearer token is redacted to a short SHA-256
// fingerprint so that no token can ever reach the browser through it.
//
//   PORT=7000 node examples/demo/echo.mjs

import { createHash } from 'node:crypto';
import http from 'node:http';

const port = Number.parseInt(process.env.PORT ?? '7000', 10);

function redact(authorization) {
  const [scheme, ...rest] = authorization.split(' ');
  const token = rest.length ? rest.join(' ') : scheme;
  const fingerprint = createHash('sha256').update(token).digest('hex').slice(0, 12);
  return `${rest.length ? scheme : 'Bearer'} <redacted sha256:${fingerprint}>`;
}

const server = http.createServer((req, res) => {
  // Drain the request body (not echoed) before answering.
  req.resume();
  req.on('end', () => {
    const url = new URL(req.url, 'http://upstream');
    const headers = { ...req.headers };
    if (headers.authorization !== undefined) headers.authorization = redact(headers.authorization);

    const body = JSON.stringify({
      method: req.method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      headers,
    }, null, 2);

    res.writeHead(200, {
      'Content-Type': 'application/json',
      'Cache-Control': 'no-store',
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(body);
  });
});

server.listen(port, '127.0.0.1', () => {
  console.error(`echo listening on http://127.0.0.1:${server.address().port}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}

// Makes docs/demo.png (1280x800): the demo SPA behind Sallyport, signed in as alice, after
// "Call API". Not a test; starts and stops its own stack (with examples/demo/echo.mjs upstream).
//
//   node screenshot.mjs            (in tests/e2e, after `npm ci` here and `cargo build`)

import fs from 'node:fs';
import path from 'node:path';

import { REPO, launchBrowser, signedInPage, startStack, text, waitUntil } from './harness.mjs';

const OUT = path.join(REPO, 'docs', 'demo.png');

let stack;
let browser;
try {
  browser = await launchBrowser();
  console.log(`Chromium ${browser.version()}`);
  stack = await startStack({ upstream: 'demo' });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 });
  const page = await signedInPage(context, stack);
  await page.click('#call-api');
  await waitUntil(async () => (await text(page, '#api-result'))?.includes('/echo/hello'), { message: '#api-result to show /echo/hello' });
  await page.evaluate(() => document.fonts?.ready);
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  await page.screenshot({ path: OUT, fullPage: false });
  console.log(`wrote ${path.relative(REPO, OUT)}`);
} catch (err) {
  console.error(err);
  process.exitCode = 1;
} finally {
  await browser?.close().catch(() => {});
  await stack?.stop();
}

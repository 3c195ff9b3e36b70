// Builds the demo SPA into dist/ for Sallyport's `static` to serve: index.html plus
// fingerprinted files under dist/assets/, and nothing inline (it runs under
// `Content-Security-Policy: default-src 'self'`).
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

// The client is built from its source, so it needs no build of its own.
const clientDir = fileURLToPath(new URL('../../../clients/js/', import.meta.url));
const clientSource = fileURLToPath(new URL('../../../clients/js/src/index.ts', import.meta.url));

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/',
  resolve: {
    alias: { '@sallyport/client': clientSource },
  },
  server: {
    fs: { allow: ['.', clientDir] },
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // No data: URLs (the CSP allows 'self' only) and no module-preload polyfill.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    rollupOptions: {
      // Hex hashes (`index-3f2a9c1d.js`): no `-` inside the hash, so the gateway's
      // fingerprint check always sees it.
      output: { hashCharacters: 'hex' },
    },
  },
});

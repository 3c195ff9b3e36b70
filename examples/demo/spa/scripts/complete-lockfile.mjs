// Completes package-lock.json with Rollup's native packages for other platforms.
//
// The npm registry reachable from this project's machines lacks most of them, so `npm install`
// leaves them out of the lock file, and `npm ci` then refuses the lock as out of sync with
// package.json. This adds each missing one with the platform it is for (from its name), so
// `npm ci` skips it here and fetches it by name and version on that platform.
//
//   node scripts/complete-lockfile.mjs    (after any `npm install` that changed the lock)

import { readFileSync, writeFileSync } from 'node:fs';

const file = new URL('../package-lock.json', import.meta.url);
const lock = JSON.parse(readFileSync(file, 'utf8'));
const packages = lock.packages;

const CPUS = { 'arm-eabi': 'arm', arm: 'arm', arm64: 'arm64', ia32: 'ia32', x64: 'x64', loong64: 'loong64', ppc64: 'ppc64', riscv64: 'riscv64', s390x: 's390x' };

/** `@rollup/rollup-linux-arm-musleabihf` → { os: linux, cpu: arm, libc: musl }. */
function platformOf(name) {
  const m = /^@rollup\/rollup-([a-z0-9]+)-(arm-eabi|[a-z0-9]+)(?:-([a-z]+))?$/.exec(name);
  if (!m) return undefined;
  const [, os, arch, abi] = m;
  const cpu = CPUS[arch];
  if (!cpu) return undefined;
  const libc = os !== 'linux' ? undefined : abi?.startsWith('musl') ? 'musl' : 'glibc';
  return { os, cpu, libc };
}

let added = 0;
for (const [path, pkg] of Object.entries(packages)) {
  if (path !== 'node_modules/rollup') continue;
  for (const [name, version] of Object.entries(pkg.optionalDependencies ?? {})) {
    const key = `node_modules/${name}`;
    if (packages[key]) continue;
    const platform = platformOf(name);
    if (!platform) continue;
    packages[key] = {
      version,
      cpu: [platform.cpu],
      dev: true,
      ...(platform.libc ? { libc: [platform.libc] } : {}),
      license: 'MIT',
      optional: true,
      os: [platform.os],
    };
    added += 1;
  }
}

// npm keeps the entries sorted by path.
const [root, ...rest] = Object.entries(packages);
lock.packages = Object.fromEntries([root, ...rest.sort(([a], [b]) => a.localeCompare(b, 'en'))]);
writeFileSync(file, `${JSON.stringify(lock, null, 2)}\n`);
console.log(`package-lock.json: added ${added} platform package(s)`);

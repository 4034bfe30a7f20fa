// Builds the web UIs into dist/ (what the registrar serves):
//   dist/phone/  the web phone: index.html, phone.js (JsSIP and all, bundled), phone.css
//   dist/admin/  a copy of admin/ (plain static files), when admin/ exists
// Everything is local: no CDN, no network at run time. The licenses of the bundled packages go
// to dist/phone/THIRD-PARTY-LICENSES.txt. `node build.mjs --dev` adds source maps and keeps the
// code readable; `--watch` (implies --dev) rebuilds the phone on change.

import { build, context } from 'esbuild';
import { cp, mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.dirname(fileURLToPath(import.meta.url));
const dist = path.join(root, 'dist');
const phoneOut = path.join(dist, 'phone');
const watch = process.argv.includes('--watch');
const dev = watch || process.argv.includes('--dev');

const exists = (p) => stat(p).then(() => true, () => false);

const phoneBuild = {
  absWorkingDir: root,
  entryPoints: ['src/phone.js', 'src/phone.css'],
  outdir: phoneOut,
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: ['chrome100', 'firefox100', 'safari15'],
  minify: !dev,
  sourcemap: dev ? 'linked' : false,
  legalComments: 'none',
  metafile: true,
  logLevel: 'info',
  define: { 'process.env.NODE_ENV': '"production"' },
};

async function copyStatic() {
  await cp(path.join(root, 'src/index.html'), path.join(phoneOut, 'index.html'));
}

/** Writes the license text of every npm package the bundle contains. */
async function writeLicenses(metafile) {
  const packages = new Set();
  for (const input of Object.keys(metafile.inputs)) {
    const m = /(?:^|\/)node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
    if (m) packages.add(m[1]);
  }
  const parts = [
    'The kubepbx web phone bundles these npm packages; their licenses follow.\n',
  ];
  for (const name of [...packages].sort()) {
    const dir = path.join(root, 'node_modules', name);
    const pkg = JSON.parse(await readFile(path.join(dir, 'package.json'), 'utf8'));
    const file = (await readdir(dir)).find((f) => /^(licen[cs]e|copying)(\.|$)/i.test(f));
    const text = file ? await readFile(path.join(dir, file), 'utf8') : `License: ${pkg.license}\n`;
    parts.push(`${'='.repeat(78)}\n${name} ${pkg.version} (${pkg.license})\n${'='.repeat(78)}\n${text.trim()}\n`);
  }
  await writeFile(path.join(phoneOut, 'THIRD-PARTY-LICENSES.txt'), parts.join('\n'));
}

async function copyAdmin() {
  const admin = path.join(root, 'admin');
  const out = path.join(dist, 'admin');
  await rm(out, { recursive: true, force: true });
  if (await exists(admin)) {
    await cp(admin, out, { recursive: true });
    console.log('copied admin/ to dist/admin/');
  } else {
    console.log('no admin/ folder: dist/admin/ not built');
  }
}

await rm(phoneOut, { recursive: true, force: true });
await mkdir(phoneOut, { recursive: true });
await copyStatic();
await copyAdmin();

if (watch) {
  const ctx = await context(phoneBuild);
  await ctx.watch();
  console.log('watching src/ (index.html is copied at start only)');
} else {
  const result = await build(phoneBuild);
  await writeLicenses(result.metafile);
}

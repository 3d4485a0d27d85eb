// Builds the front end into dist/, which hive-c0re embeds when it is compiled:
// each page's HTML (src/pages), its ES module bundle and the stylesheet.
// dist/ is rebuilt from scratch so no stale file ends up in the binary.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.join(here, 'dist');
const pages = path.join(here, 'src/pages');

fs.rmSync(dist, { recursive: true, force: true });
await build({
  absWorkingDir: here,
  entryPoints: ['src/hive.js', 'src/agent.js', 'src/login.js', 'src/style.css'],
  bundle: true,
  format: 'esm',
  target: 'es2022',
  outdir: 'dist',
  logLevel: 'warning',
});
for (const page of fs.readdirSync(pages).filter((f) => f.endsWith('.html'))) {
  fs.copyFileSync(path.join(pages, page), path.join(dist, page));
}

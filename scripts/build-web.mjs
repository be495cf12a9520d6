#!/usr/bin/env node
// Builds the web client into build/web/ (git-ignored):
//   assets/app-<hash>.js    one minified bundle (socket.io-client included)
//   assets/app-<hash>.css   one minified stylesheet
//   assets/icon-*-<hash>.*  the icons
//   sw.js                   the service worker (served at /sw.js, not fingerprinted)
//   build.json              which file is which, read by app/api/web.py
// Every text file also gets .gz and .br siblings so the server never compresses
// on the fly. scripts/_env.sh runs this when a static source changed.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync, copyFileSync } from "node:fs";
import { dirname, join, extname, basename, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync, brotliCompressSync, constants } from "node:zlib";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const OUT = join(ROOT, "build", "web");
const ASSETS = join(OUT, "assets");
const TARGET = ["es2020", "chrome100", "firefox100", "safari15"];

rmSync(OUT, { recursive: true, force: true });
mkdirSync(ASSETS, { recursive: true });

const result = await build({
  entryPoints: { app: join(ROOT, "static/js/main.js"), "app-style": join(ROOT, "static/css/app.css") },
  bundle: true, minify: true, format: "iife", target: TARGET, legalComments: "none",
  entryNames: "[name]-[hash]", outdir: ASSETS, metafile: true, logLevel: "warning",
});
const outputs = Object.keys(result.metafile.outputs).map((p) => relative(OUT, join(ROOT, p)));
const js = outputs.find((p) => p.endsWith(".js"));
const css = outputs.find((p) => p.endsWith(".css"));

await build({
  entryPoints: [join(ROOT, "static/sw.js")], bundle: true, minify: true, format: "iife",
  target: TARGET, legalComments: "none", outfile: join(OUT, "sw.js"), logLevel: "warning",
});

const icons = {};
for (const name of readdirSync(join(ROOT, "static/img"))) {
  const src = join(ROOT, "static/img", name);
  const hash = createHash("sha256").update(readFileSync(src)).digest("hex").slice(0, 10);
  const dest = `assets/${basename(name, extname(name))}-${hash}${extname(name)}`;
  copyFileSync(src, join(OUT, dest));
  icons[name] = dest;
}

const compressible = (p) => /\.(js|css|svg|json)$/.test(p);
const files = [...readdirSync(ASSETS).map((f) => join(ASSETS, f)), join(OUT, "sw.js")];
for (const file of files) {
  if (!compressible(file)) continue;
  const data = readFileSync(file);
  writeFileSync(`${file}.gz`, gzipSync(data, { level: 9 }));
  writeFileSync(`${file}.br`, brotliCompressSync(data, {
    params: { [constants.BROTLI_PARAM_QUALITY]: 11, [constants.BROTLI_PARAM_SIZE_HINT]: data.length },
  }));
}

const version = createHash("sha256").update(`${js}${css}${JSON.stringify(icons)}${readFileSync(join(OUT, "sw.js"))}`)
  .digest("hex").slice(0, 12);
writeFileSync(join(OUT, "build.json"), JSON.stringify({ version, js, css, icons, sw: "sw.js" }, null, 2));
console.error(`parley: built the web client (${js}, ${css})`);

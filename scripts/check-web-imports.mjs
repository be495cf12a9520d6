#!/usr/bin/env node
// Fails (exit 1) when the web client's modules import each other in a cycle, or
// a module imports from a layer above its own. Layers, bottom to top:
//   lib/ → store/ → views/ → main.js (the entry)
// The import graph comes from esbuild's metafile, so it is exactly what the
// bundle contains. Usage: check-web-imports.mjs [entry] (default static/js/main.js)
import { build } from "esbuild";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const entry = resolve(process.argv[2] || join(ROOT, "static/js/main.js"));
const base = dirname(entry);

const result = await build({
  entryPoints: [entry], bundle: true, write: false, metafile: true, format: "esm",
  logLevel: "silent", external: ["socket.io-client"],
});

const ours = (p) => !p.includes("node_modules") && resolve(ROOT, p).startsWith(base);
const name = (p) => relative(base, resolve(ROOT, p));
const graph = new Map();
for (const [file, info] of Object.entries(result.metafile.inputs)) {
  if (!ours(file)) continue;
  graph.set(name(file), info.imports.filter((i) => !i.external && ours(i.path)).map((i) => name(i.path)));
}

const LAYERS = ["lib", "store", "views"];
const layerOf = (file) => {
  const top = file.split("/")[0];
  const i = LAYERS.indexOf(top);
  return i === -1 ? LAYERS.length : i; // the entry (and anything outside the folders) is on top
};

const problems = [];
for (const [file, deps] of graph) {
  for (const dep of deps) {
    if (layerOf(dep) > layerOf(file)) problems.push(`${file} imports ${dep}, a layer above it`);
  }
}

// Cycles: depth-first search, reporting each cycle's path once.
const state = new Map(); // file → 1 visiting, 2 done
const stack = [];
const seen = new Set();
function visit(file) {
  state.set(file, 1);
  stack.push(file);
  for (const dep of graph.get(file) || []) {
    if (state.get(dep) === 1) {
      const cycle = [...stack.slice(stack.indexOf(dep)), dep];
      const key = [...cycle].slice(0, -1).sort().join(" ");
      if (!seen.has(key)) { seen.add(key); problems.push(`import cycle: ${cycle.join(" → ")}`); }
    } else if (!state.has(dep)) visit(dep);
  }
  stack.pop();
  state.set(file, 2);
}
for (const file of graph.keys()) if (!state.has(file)) visit(file);

if (problems.length) {
  for (const p of problems) console.error(p);
  process.exit(1);
}
console.log(`${graph.size} modules, no import cycles, layers respected`);

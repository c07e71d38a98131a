// A CommonJS bundle of an npm package for the browser, built in memory.
//
// JsSIP 3.13.8 on npm ships lib/ (CommonJS: require('events'), 'debug',
// 'sdp-transform', '../package.json') and no dist/ bundle, and tests/js has no
// bundler: this walks the require() graph from a package's entry point,
// resolves each specifier the way a browser bundler does (relative paths,
// node_modules packages, their "browser" field, .js/.json/index.js), and
// wraps every module in a function with its own module/exports/require.
// Bare names always resolve to tests/js/node_modules (the npm `events`
// package, never Node's built-in), so the page runs what the lock file pins.
"use strict";

const fs = require("fs");
const path = require("path");

const REQUIRE_RE = /\brequire\(\s*['"]([^'"]+)['"]\s*\)/g;

function isFile(p) {
  try {
    return fs.statSync(p).isFile();
  } catch (err) {
    return false;
  }
}

function resolveFile(base) {
  for (const suffix of ["", ".js", ".json", "/index.js"]) {
    if (isFile(base + suffix)) return base + suffix;
  }
  throw new Error(`bundle: cannot resolve ${base}`);
}

function resolvePackage(nodeModules, name) {
  const dir = path.join(nodeModules, name);
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
  const main = typeof pkg.browser === "string" ? pkg.browser : (pkg.main || "index.js");
  return resolveFile(path.join(dir, main));
}

// The source of a script that sets window[globalName] to the package's exports.
function bundle(packageName, globalName, nodeModules) {
  const modules = [];
  const ids = new Map();

  function add(file) {
    if (ids.has(file)) return ids.get(file);
    const id = modules.length;
    ids.set(file, id);
    modules.push(null);
    let src = fs.readFileSync(file, "utf8");
    const deps = {};
    if (file.endsWith(".json")) {
      src = `module.exports = ${src};`;
    } else {
      for (const match of src.matchAll(REQUIRE_RE)) {
        const spec = match[1];
        if (spec in deps) continue;
        const target = spec.startsWith(".")
          ? resolveFile(path.resolve(path.dirname(file), spec))
          : resolvePackage(nodeModules, spec);
        deps[spec] = add(target);
      }
    }
    modules[id] = { file, src, deps };
    return id;
  }

  add(resolvePackage(nodeModules, packageName));
  const defs = modules.map((m) =>
    `[function (module, exports, require) {\n${m.src}\n},\n${JSON.stringify(m.deps)}]`);
  return `(function () {
"use strict";
var defs = [
${defs.join(",\n")}
];
var cache = {};
function load(id) {
  if (cache[id]) return cache[id].exports;
  var module = { exports: {} };
  cache[id] = module;
  defs[id][0].call(module.exports, module, module.exports, function (spec) {
    var dep = defs[id][1][spec];
    if (dep === undefined) throw new Error("bundle: module " + spec + " not bundled");
    return load(dep);
  });
  return module.exports;
}
window[${JSON.stringify(globalName)}] = load(0);
})();
`;
}

module.exports = { bundle };

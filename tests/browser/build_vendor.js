#!/usr/bin/env node
// Builds the socket.io-client bundle that the relay's demo page ships, from this folder's package-lock.json,
// and the licence notice of everything bundled into it. The result is committed under
// src/kernel_relay/demo/static/vendor/ so the relay serves it after `pip install .` with no npm at runtime;
// tests/test_browser_vendor.py rebuilds it and checks the committed files are byte for byte what this makes.
//
// usage: node build_vendor.js <output folder>
"use strict";

const fs = require("fs");
const path = require("path");
const esbuild = require("esbuild");

const PACKAGE = "socket.io-client-4"; // npm alias of socket.io-client@4.8.x, see package.json
const BUNDLE = "socket.io-client.esm.min.js";
const NOTICE = "socket.io-client.LICENSES.txt";

function packageRoot(input) {
  // "node_modules/a/node_modules/@b/c/lib/x.js" -> "node_modules/a/node_modules/@b/c"
  const parts = input.split("/");
  const last = parts.lastIndexOf("node_modules");
  const size = parts[last + 1].startsWith("@") ? 3 : 2;
  return parts.slice(0, last + size).join("/");
}

function licenceText(root) {
  const names = fs.readdirSync(root).filter((name) => /^(licen[cs]e|copying)(\.|$)/i.test(name));
  if (names.length === 0) throw new Error(`no licence file in ${root}`);
  return names.sort().map((name) => fs.readFileSync(path.join(root, name), "utf8").trim()).join("\n\n");
}

function main() {
  const out = process.argv[2];
  if (!out) {
    console.error("usage: node build_vendor.js <output folder>");
    process.exit(2);
  }
  const client = require(`${PACKAGE}/package.json`);
  const result = esbuild.buildSync({
    stdin: {
      contents: `export { Manager, io } from "${PACKAGE}";\n`,
      resolveDir: __dirname,
      sourcefile: "vendor-entry.js",
    },
    absWorkingDir: __dirname,
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2020",
    minify: true,
    legalComments: "none",
    charset: "utf8",
    metafile: true,
    write: false,
    banner: {
      js:
        `/*! socket.io-client ${client.version} (${client.license}), bundled with esbuild ` +
        `${esbuild.version} by tests/browser/build_vendor.js; licences: ${NOTICE} */`,
    },
  });
  const roots = [...new Set(Object.keys(result.metafile.inputs).filter((input) => input.includes("node_modules/")).map(packageRoot))].sort();
  const sections = roots.map((root) => {
    const meta = JSON.parse(fs.readFileSync(path.join(__dirname, root, "package.json"), "utf8"));
    return `${meta.name} ${meta.version} (${meta.license})\n${"-".repeat(60)}\n${licenceText(path.join(__dirname, root))}\n`;
  });
  const notice =
    `The demo page's ${BUNDLE} bundles these npm packages, as locked in tests/browser/package-lock.json:\n\n` +
    sections.join("\n");
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, BUNDLE), result.outputFiles[0].contents);
  fs.writeFileSync(path.join(out, NOTICE), notice);
  console.log(JSON.stringify({ bundle: BUNDLE, bytes: result.outputFiles[0].contents.length, packages: roots }));
}

main();

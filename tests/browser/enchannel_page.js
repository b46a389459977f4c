#!/usr/bin/env node
// enchannel-socketio-backend 0.1.0 end to end in headless Chromium: bundles enchannel_entry.js (the npm
// package as published, with its socket.io-client 1.x) with esbuild, loads it in a page, runs one session
// against the relay and prints one JSON object of observations. tests/test_browser_enchannel.py checks them.
//
// usage: node enchannel_page.js <relay url> <screenshot.png> same-origin|cross-origin <page port>
//                               [stdin timeout in ms, 0 to skip]
"use strict";

const path = require("path");
const esbuild = require("esbuild");
const { launch, watch } = require("./chromium");

const TIMEOUT = Number(process.env.ENCHANNEL_TIMEOUT || 90000);

function bundle() {
  const built = esbuild.buildSync({
    entryPoints: [path.join(__dirname, "enchannel_entry.js")],
    absWorkingDir: __dirname,
    bundle: true,
    format: "iife",
    platform: "browser",
    define: { global: "window" },
    logLevel: "silent",
    metafile: true,
    write: false,
  });
  const versions = {};
  for (const input of Object.keys(built.metafile.inputs)) {
    const match = /(?:^|\/)node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
    if (match && !(match[1] in versions)) {
      const root = input.slice(0, match.index + match[0].length);
      versions[match[1]] = require(path.join(__dirname, root, "package.json")).version;
    }
  }
  return { code: built.outputFiles[0].text, versions };
}

// The page, served the way a user's app would be: from its own loopback HTTP server (cross-origin: the relay
// must allow the page's origin), or from the relay's origin itself (same-origin: the relay's own document for
// an unknown path is replaced by the test page, so the page keeps the relay's origin and its loopback address;
// a page fulfilled by request interception would be "public" to Chromium's local network access checks).
function servePage(html, code, port) {
  const http = require("http");
  const server = http.createServer((request, response) => {
    const isScript = request.url.endsWith(".js");
    response.writeHead(isScript || request.url === "/" ? 200 : 404, {
      "Content-Type": isScript ? "text/javascript; charset=utf-8" : "text/html; charset=utf-8",
      "Cache-Control": "no-store",
    });
    response.end(isScript ? code : html);
  });
  return new Promise((resolve) => server.listen(port, "127.0.0.1", () => resolve(server)));
}

async function main() {
  const [url, screenshot, mode, pagePort, stdinTimeout = "0"] = process.argv.slice(2);
  const relay = new URL(url).origin;
  const { code, versions } = bundle();
  const html =
    "<!doctype html><meta charset=utf-8><title>enchannel-socketio-backend</title>" +
    '<script src="/enchannel.js"></script><pre id="log">running</pre>';
  const { browser, close } = await launch();
  const observed = { bundled: versions, mode };
  let server = null;
  try {
    const page = await browser.newPage({ viewport: { width: 900, height: 640 } });
    page.setDefaultTimeout(TIMEOUT);
    const seen = watch(page);
    if (mode === "cross-origin") {
      server = await servePage(html, code, Number(pagePort));
      await page.goto(`http://127.0.0.1:${pagePort}/`);
    } else {
      await page.goto(`${relay}/__enchannel_test_page__`); // the relay's JSON 404: a document of its origin
      await page.setContent(html.replace('<script src="/enchannel.js"></script>', ""));
      await page.addScriptTag({ content: code });
    }
    observed.pageOrigin = await page.evaluate(() => window.location.origin);
    const outcome = await page.evaluate(
      ([endpoint, options]) => window.runEnchannel(endpoint, options),
      [`${relay}/`, { timeout: TIMEOUT, stdinTimeout: Number(stdinTimeout) }],
    );
    await page.evaluate((text) => {
      document.getElementById("log").textContent = text;
    }, JSON.stringify(outcome, null, 2));
    await page.screenshot({ path: screenshot });
    Object.assign(observed, outcome);
    observed.pageErrors = seen.pageErrors;
    observed.consoleErrors = seen.consoleErrors;
    observed.engineRequests = seen.engineRequests;
    observed.engineFailures = seen.engineFailures;
    observed.websockets = seen.websockets;
  } finally {
    await close();
    if (server) server.close();
  }
  process.stdout.write(`${JSON.stringify(observed)}\n`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});

// Launches Debian's Chromium through playwright-core (which never downloads a browser of its own).
"use strict";

const { chromium } = require("playwright-core");

const EXECUTABLE = process.env.KERNEL_RELAY_CHROMIUM || "/usr/bin/chromium";

// playwright-core gives every launch a fresh temporary profile (its own --user-data-dir) and removes it on
// close, so no profile of ours is needed.
async function launch() {
  const browser = await chromium.launch({
    executablePath: EXECUTABLE,
    headless: true,
    timeout: 120000,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
    ],
  });
  const close = async () => {
    await browser.close().catch(() => {});
  };
  return { browser, close };
}

// Collects Content-Security-Policy violations in the page itself (an init script is not subject to the CSP).
async function recordCspViolations(page) {
  await page.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener("securitypolicyviolation", (event) => {
      window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
    });
  });
  return async () => page.evaluate(() => window.__cspViolations);
}

// Records what a test wants to know about a page: console errors, uncaught exceptions,
// and the Engine.IO URLs (polling requests and WebSockets) it used.
function watch(page) {
  const seen = { consoleErrors: [], pageErrors: [], engineRequests: [], engineFailures: [], websockets: [] };
  page.on("console", (msg) => {
    if (msg.type() === "error") seen.consoleErrors.push(msg.text());
  });
  page.on("pageerror", (error) => seen.pageErrors.push(String(error)));
  page.on("request", (request) => {
    if (request.url().includes("/socket.io/")) seen.engineRequests.push(request.url());
  });
  page.on("response", async (response) => {
    if (response.url().includes("/socket.io/") && response.status() >= 400) {
      const body = await response.text().catch(() => "");
      seen.engineFailures.push(`${response.request().method()} ${response.url()} -> ${response.status()} ${body}`);
    }
  });
  page.on("requestfailed", (request) => {
    if (request.url().includes("/socket.io/")) {
      seen.engineFailures.push(`${request.method()} ${request.url()} failed: ${request.failure()?.errorText}`);
    }
  });
  page.on("websocket", (ws) => seen.websockets.push(ws.url()));
  return seen;
}

module.exports = { launch, watch, recordCspViolations, EXECUTABLE };

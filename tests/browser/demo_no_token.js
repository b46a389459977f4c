#!/usr/bin/env node
// Opens the demo page of a relay that has a token, without giving the page the token, and prints what the
// page says (one JSON object). tests/test_browser_demo.py checks that it explains how to pass the token.
//
// usage: node demo_no_token.js <relay url>
"use strict";

const { launch } = require("./chromium");

async function main() {
  const [url] = process.argv.slice(2);
  const { browser, close } = await launch();
  const observed = {};
  try {
    const page = await browser.newPage();
    const response = await page.goto(url);
    observed.pageStatus = response.status();
    await page.locator("#status[data-state='error']").waitFor({ timeout: 60000 });
    observed.status = await page.locator("#status").textContent();
    observed.startEnabled = await page.locator("#start").isEnabled();
  } finally {
    await close();
  }
  process.stdout.write(`${JSON.stringify(observed)}\n`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});

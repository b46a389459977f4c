#!/usr/bin/env node
// Drives the relay's demo page in headless Chromium like a user would, and prints one JSON object of what
// the page showed. tests/test_browser_demo.py starts the relay and checks the observations.
//
// usage: node demo_page.js <relay url> <screenshot.png>   (env DEMO_PNG_BASE64: the PNG the kernel displays)
"use strict";

const { launch, watch, recordCspViolations } = require("./chromium");

const STEP_TIMEOUT = 90000;

async function cellSummary(cell) {
  return cell.evaluate((node) => ({
    prompt: node.querySelector(".prompt")?.textContent,
    status: node.dataset.status ?? null,
    outputs: [...node.querySelectorAll(".output")].map((output) => ({
      kind: output.className.replace(/^output /, ""),
      text: output.textContent,
      ename: output.dataset.ename ?? null,
      coloured: output.querySelectorAll("span[class^='ansi-'], span[style]").length,
    })),
    images: [...node.querySelectorAll(".output img")].map((img) => ({
      complete: img.complete,
      width: img.naturalWidth,
      height: img.naturalHeight,
      src: img.src.slice(0, 22),
    })),
  }));
}

async function submit(page, code) {
  const index = await page.locator(".cell").count();
  await page.locator("#code").fill(code);
  await page.locator("#code").press("Shift+Enter");
  const cell = page.locator(".cell").nth(index);
  await cell.waitFor({ timeout: STEP_TIMEOUT });
  return cell;
}

async function finished(cell) {
  await cell.locator("xpath=self::*[@data-status]").waitFor({ timeout: STEP_TIMEOUT });
  return cellSummary(cell);
}

async function main() {
  const [url, screenshot] = process.argv.slice(2);
  const png = process.env.DEMO_PNG_BASE64;
  const { browser, close } = await launch();
  const observed = {};
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 1150 } });
    page.setDefaultTimeout(STEP_TIMEOUT);
    const cspViolations = await recordCspViolations(page);
    const seen = watch(page);

    const response = await page.goto(url);
    observed.page = { status: response.status(), csp: response.headers()["content-security-policy"] ?? null };
    await page.locator("#kernelspec option[value='python3']").waitFor({ state: "attached" });
    observed.kernelspecs = await page.locator("#kernelspec option").evaluateAll((options) => options.map((o) => o.value));
    observed.location = page.url();
    await page.selectOption("#kernelspec", "python3");
    await page.click("#start");
    await page.locator("#status[data-state='idle']").waitFor();
    observed.editorEnabled = await page.locator("#code").isEnabled();

    observed.result = await finished(await submit(page, "1+1"));
    observed.print = await finished(await submit(page, "print('hello from the demo page')"));
    observed.error = await finished(await submit(page, "1/0"));
    observed.display = await finished(
      await submit(
        page,
        "from IPython.display import Image, display\nimport base64\n" +
          `display(Image(data=base64.b64decode('${png}')))`,
      ),
    );

    const asking = await submit(page, "name = input('name? ')\nprint('hello', name)");
    const field = asking.locator(".input-request input");
    await field.waitFor();
    await field.fill("chromium");
    await field.press("Enter");
    observed.input = await finished(asking);

    // Interrupt once the cell's own output shows it is in user code, not merely announced.
    const sleeping = await submit(page, "import time\nprint('sleeping', flush=True)\ntime.sleep(120)");
    await sleeping.locator(".output", { hasText: "sleeping" }).waitFor();
    await page.locator("#status[data-state='busy']").waitFor();
    await page.click("#interrupt");
    observed.interrupt = await finished(sleeping);
    await page.locator("#status[data-state='idle']").waitFor();

    await page.screenshot({ path: screenshot });

    await page.click("#shutdown");
    await page.locator("#status[data-state='dead']").waitFor();
    observed.afterShutdown = {
      status: await page.locator("#status").textContent(),
      editorEnabled: await page.locator("#code").isEnabled(),
      startEnabled: await page.locator("#start").isEnabled(),
    };

    // Start again, and let the new kernel die on its own: the page says so and disables the editor.
    await page.click("#start");
    await page.locator("#status[data-state='idle']").waitFor();
    observed.restartedCells = await page.locator(".cell").count();
    const dying = await submit(page, "import os\nos._exit(1)");
    await page.locator("#status[data-state='dead']").waitFor();
    observed.afterDeath = {
      status: await page.locator("#status").textContent(),
      editorEnabled: await page.locator("#code").isEnabled(),
      cell: await cellSummary(dying),
    };

    observed.cspViolations = await cspViolations();
    observed.consoleErrors = seen.consoleErrors;
    observed.pageErrors = seen.pageErrors;
    observed.websockets = seen.websockets;
    observed.engineRequests = seen.engineRequests.length;
  } finally {
    await close();
  }
  process.stdout.write(`${JSON.stringify(observed)}\n`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});

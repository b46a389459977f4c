#!/usr/bin/env node
// Opens JupyterLab in headless Chromium like a user would: a new notebook from the launcher's Python 3
// card, waits for its kernel to be idle, types a cell, runs it with Shift+Enter and waits for the output.
// tests/browser/jupyterlab.py starts the JupyterLab server (with --gateway-url, so the kernel is the
// gateway's: Jupyter Kernel Gateway, or the relay).
//
// usage: node jupyterlab_notebook.js --url http://127.0.0.1:PORT/lab?token=T --screenshot PATH
//                                    [--code 'print(6*7)'] [--expect 42] [--kernel 'Python 3']
//                                    [--timeout 120]
//
// Prints one JSON line: {"ok": true, "output": ..., "kernel_status": ..., ...} and exits 0 with a
// screenshot at PATH; or {"ok": false, "error": ..., ...} (the error also on stderr), a screenshot at
// PATH-failed.png, and exits 1.
"use strict";

const fs = require("fs");
const path = require("path");
const { launch, watch } = require("./chromium");

const DEFAULTS = { code: "print(6*7)", expect: "42", kernel: "Python 3", timeout: "120" };
const POLL = 250;

function parseArgs(argv) {
  const options = { ...DEFAULTS };
  for (let i = 0; i < argv.length; i += 1) {
    const match = /^--(url|screenshot|code|expect|kernel|timeout)(?:=(.*))?$/s.exec(argv[i]);
    if (!match) throw new Error(`unknown argument ${JSON.stringify(argv[i])}`);
    const value = match[2] !== undefined ? match[2] : argv[++i];
    if (value === undefined) throw new Error(`--${match[1]} needs a value`);
    options[match[1]] = value;
  }
  if (!options.url || !options.screenshot) throw new Error("--url and --screenshot are required");
  options.timeout = Number(options.timeout) * 1000;
  return options;
}

function failedPath(screenshot) {
  const { dir, name, ext } = path.parse(screenshot);
  return path.join(dir, `${name}-failed${ext || ".png"}`);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// JupyterLab's modal dialogs: "Select Kernel" is accepted with its default (the notebook's kernel), and so
// is one whose title matches a RegExp in observed.acceptDialogs (a step that expects it); any other dialog
// (say "Error Starting Kernel") means the run has failed, and its text is the reason.
async function handleDialogs(page, observed) {
  const dialog = page.locator(".jp-Dialog").first();
  if (!(await dialog.isVisible().catch(() => false))) return;
  const header = ((await dialog.locator(".jp-Dialog-header").textContent().catch(() => "")) || "").trim();
  const body = ((await dialog.locator(".jp-Dialog-body").innerText().catch(() => "")) || "").trim();
  observed.dialogs.push(`${header}: ${body}`.slice(0, 2000));
  if (/select kernel/i.test(header) || (observed.acceptDialogs || []).some((title) => title.test(header))) {
    await dialog.locator(".jp-Dialog-footer .jp-mod-accept").click();
    await dialog.waitFor({ state: "detached", timeout: 10000 }).catch(() => {});
    return;
  }
  throw new Error(`JupyterLab showed a dialog: ${header}: ${body}`);
}

// Waits until `locator` is visible, dealing with dialogs meanwhile; `what` names the step in errors.
async function waitVisible(page, locator, what, observed, timeout) {
  observed.step = what;
  const deadline = Date.now() + timeout;
  for (;;) {
    await handleDialogs(page, observed);
    if (await locator.first().isVisible().catch(() => false)) return locator.first();
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout / 1000}s waiting for ${what}`);
    await sleep(POLL);
  }
}

// The page's failed API calls (the server relays kernelspecs and kernels calls to the gateway, so a
// gateway's refusal shows up here as, say, "GET /api/kernelspecs -> 401").
function recordHttpErrors(page, observed) {
  page.on("response", (response) => {
    const url = new URL(response.url());
    if (response.status() >= 400 && url.pathname.includes("/api/")) {
      observed.http_errors.push(`${response.request().method()} ${url.pathname} -> ${response.status()}`);
    }
  });
}

// The first code cell's output as shown, for a failure's report.
async function firstOutput(page) {
  const area = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-CodeCell .jp-OutputArea").first();
  return ((await area.innerText({ timeout: 1000 }).catch(() => "")) || "").trim() || null;
}

async function toasts(page) {
  return page
    .locator(".Toastify__toast")
    .evaluateAll((nodes) => nodes.map((node) => node.innerText.trim()))
    .catch(() => []);
}

async function kernelStatus(panel) {
  return panel
    .locator(".jp-Notebook-ExecutionIndicator")
    .first()
    .getAttribute("data-status", { timeout: 1000 })
    .catch(() => null);
}

// Opens a new notebook from the launcher's options.kernel card and waits for its kernel to be idle;
// returns its panel.
async function openNotebook(page, options, observed) {
  const stepTimeout = options.timeout;
  const response = await page.goto(options.url, { timeout: stepTimeout });
  observed.page_status = response ? response.status() : null;
  if (!response || response.status() !== 200) throw new Error(`GET ${options.url} answered ${observed.page_status}`);

  // The launcher's notebook cards are the gateway's kernelspecs (display names as their titles).
  const cards = page.locator('.jp-LauncherCard[data-category="Notebook"]');
  await waitVisible(page, cards, "the launcher's Notebook cards", observed, stepTimeout);
  observed.kernelspecs = await cards.evaluateAll((nodes) => nodes.map((node) => node.getAttribute("title")));
  const index = observed.kernelspecs.findIndex((title) => (title || "").includes(options.kernel));
  if (index < 0) {
    throw new Error(`no launcher card for a ${JSON.stringify(options.kernel)} notebook (cards: ${observed.kernelspecs.join(", ")})`);
  }
  await cards.nth(index).click();

  // The new notebook is the visible notebook panel. Its toolbar says "No Kernel" until the session has its
  // kernel, and its execution indicator (data-status) shows the kernel's status; "idle" alone is not
  // enough, the indicator starts out idle before there is a kernel.
  const panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").first();
  const kernelName = panel.locator(".jp-KernelName", { hasText: options.kernel });
  await waitVisible(page, kernelName, `the notebook's toolbar to name a ${JSON.stringify(options.kernel)} kernel`, observed, stepTimeout);
  observed.kernel = (await kernelName.first().innerText()).trim();
  const idle = panel.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]');
  await waitVisible(page, idle, "the new notebook's kernel to be idle", observed, stepTimeout);
  observed.notebook = ((await page.locator(".lm-DockPanel-tabBar .lm-mod-current .lm-TabBar-tabLabel").first().textContent().catch(() => "")) || "").trim();
  return panel;
}

// Types `code` into the notebook's code cell number `index` (from 0; Shift+Enter on the last cell adds
// the next), runs it, and waits for an output showing `expect`, its execution count and idle.
async function runCell(page, panel, index, code, expect, observed, stepTimeout) {
  const cell = panel.locator(".jp-Notebook .jp-CodeCell").nth(index);
  const editor = cell.locator(".cm-content");
  await waitVisible(page, editor, `the editor of cell ${index + 1}`, observed, stepTimeout);
  await editor.click();
  // insertText, not typing key by key: CodeMirror would auto-close brackets and auto-indent lines.
  await page.keyboard.insertText(code);
  observed.typed = await editor.innerText();
  await page.keyboard.press("Shift+Enter");

  // A cell sent to the kernel shows "[*]:" at once (then its execution count); "[ ]:" means it was not sent.
  const prompt = cell.locator(".jp-InputPrompt");
  const sent = cell.locator(".jp-InputPrompt", { hasText: /\[(\*|\d+)\]/ });
  await waitVisible(page, sent, "the cell to be sent to the kernel (its prompt to show [*] or [n])", observed, 15000).catch(async (error) => {
    const shown = ((await prompt.innerText().catch(() => "")) || "").trim();
    throw new Error(`${error.message}; the prompt shows ${JSON.stringify(shown)}`);
  });

  const output = cell.locator(".jp-OutputArea-output", { hasText: expect });
  await waitVisible(page, output, `the cell's output to show ${JSON.stringify(expect)}`, observed, stepTimeout);
  observed.output = (await cell.locator(".jp-OutputArea").innerText()).trim();
  // The reply ends the execution: the prompt gets its execution count, and the kernel goes back to idle.
  const counted = cell.locator(".jp-InputPrompt", { hasText: /\[\d+\]/ });
  await waitVisible(page, counted, "the cell's execution count (the execute_reply)", observed, stepTimeout);
  observed.prompt = (await prompt.innerText()).trim();
  const idle = panel.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]');
  await waitVisible(page, idle, "the kernel to be idle after the cell ran", observed, stepTimeout);
}

async function run(page, options, observed) {
  const panel = await openNotebook(page, options, observed);
  await runCell(page, panel, 0, options.code, options.expect, observed, options.timeout);
  observed.kernel_status = await kernelStatus(panel);
  await page.screenshot({ path: options.screenshot });
  observed.screenshot = options.screenshot;
}

// Runs `scenario(page, options, observed)` in a fresh headless Chromium under options.timeout, prints
// `observed` as one JSON line and exits 0 if it succeeded; else 1, with a screenshot at PATH-failed.png.
async function drive(name, argv, scenario) {
  let options;
  try {
    options = parseArgs(argv);
  } catch (error) {
    console.error(`${name}: ${error.message}`);
    process.exit(2);
  }
  // A last resort should the browser itself hang (the run's own timeout covers the steps).
  setTimeout(() => {
    console.error(`${name}: the browser did not finish; exiting`);
    process.exit(1);
  }, options.timeout + 60000).unref();
  const observed = { ok: false, output: null, kernel_status: null, dialogs: [], http_errors: [] };
  const { browser, close } = await launch();
  let page;
  let failure = null;
  try {
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.setDefaultTimeout(30000);
    const seen = watch(page);
    recordHttpErrors(page, observed);
    let timer;
    const overall = new Promise((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`gave up after ${options.timeout / 1000}s in all, waiting for ${observed.step}`)),
        options.timeout,
      );
    });
    try {
      await Promise.race([scenario(page, options, observed), overall]);
      observed.ok = true;
      delete observed.step;
    } finally {
      clearTimeout(timer);
      observed.websockets = seen.websockets;
      observed.console_errors = seen.consoleErrors.slice(0, 20);
      observed.page_errors = seen.pageErrors.slice(0, 20);
    }
  } catch (error) {
    failure = error;
  }
  if (failure) {
    observed.error = String(failure.message || failure);
    if (observed.http_errors.length) {
      observed.error += ` (failed API calls: ${[...new Set(observed.http_errors)].join(", ")})`;
    }
    if (page) {
      observed.toasts = await toasts(page);
      observed.output = await firstOutput(page);
      observed.kernel_status = await kernelStatus(page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").first());
      const shot = failedPath(options.screenshot);
      await page.screenshot({ path: shot, timeout: 15000 }).then(
        () => { observed.screenshot = shot; },
        (error) => { observed.screenshot_error = String(error.message || error); },
      );
    }
    console.error(`${name} failed: ${observed.error}`);
  }
  await close();
  // Leave no screenshot of an earlier run that says otherwise.
  fs.rmSync(observed.ok ? failedPath(options.screenshot) : options.screenshot, { force: true });
  delete observed.acceptDialogs;
  process.stdout.write(`${JSON.stringify(observed)}\n`);
  process.exit(observed.ok ? 0 : 1);
}

module.exports = { drive, openNotebook, runCell, waitVisible, handleDialogs, kernelStatus, sleep, POLL };

if (require.main === module) {
  drive("jupyterlab_notebook.js", process.argv.slice(2), run).catch((error) => {
    console.error(error);
    process.exit(1);
  });
}

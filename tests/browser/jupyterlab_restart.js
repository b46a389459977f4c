#!/usr/bin/env node
// A restart in JupyterLab as a user does it, then a kernel that dies, in one browser session: a new notebook
// runs a cell; Kernel > Restart Kernel… (confirmed) must bring the kernel back to idle and run the next cell
// with no "Kernel Restarting" dialog (JupyterLab shows that one for a restart it did not ask for: "The
// kernel … appears to have died"); then a cell ends the kernel's process (os._exit) and what JupyterLab
// shows of that death is recorded for the test to check. tests/browser/jupyterlab.py starts the server.
//
// usage: node jupyterlab_restart.js --url http://127.0.0.1:PORT/lab?token=T --screenshot PATH
//                                   [--kernel 'Python 3'] [--timeout 120]
//
// Prints one JSON line as jupyterlab_notebook.js does, with "restart" (the kernel's statuses, the kernel
// WebSockets opened, dialogs) and "death" (statuses, dialogs, the status bar) added.
"use strict";

const { drive, openNotebook, runCell, waitVisible, handleDialogs, sleep, POLL } = require("./jupyterlab_notebook");

// How long dialogs are watched for once a step looks done: the "Kernel Restarting" dialog follows the
// kernel's status message, which may come after the status shown has gone back to idle.
const SETTLE = 3000;
// How long JupyterLab is given to show a death (the relay notices one within a second or two).
const DEATH_WAIT = 30000;
const KERNEL_SOCKET = /\/api\/kernels\/[^/]+\/channels/;

// Records every kernel status the notebook's execution indicator shows (window.__statuses), so that a
// short "restarting" is seen even if it is over before the next poll.
async function recordStatuses(page) {
  await page.evaluate(() => {
    const panel = document.querySelector(".jp-NotebookPanel:not(.lm-mod-hidden)");
    window.__statuses = [];
    const note = () => {
      const indicator = panel.querySelector(".jp-Notebook-ExecutionIndicator");
      const status = indicator ? indicator.getAttribute("data-status") : null;
      if (window.__statuses[window.__statuses.length - 1] !== status) window.__statuses.push(status);
    };
    note();
    new MutationObserver(note).observe(panel, { attributes: true, subtree: true, attributeFilter: ["data-status"] });
  });
  return async () => page.evaluate(() => window.__statuses.slice());
}

async function statusBar(page) {
  return ((await page.locator("#jp-main-statusbar").innerText({ timeout: 1000 }).catch(() => "")) || "").replace(/\s+/g, " ").trim();
}

// Watches for `ms` more, failing on any dialog not expected (handleDialogs).
async function settle(page, observed, ms) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    await handleDialogs(page, observed);
    await sleep(POLL);
  }
}

// Polls `done` until it is true, dealing with dialogs meanwhile; fails after `timeout` ms.
async function waitUntil(page, observed, timeout, done) {
  const deadline = Date.now() + timeout;
  while (!(await done())) {
    await handleDialogs(page, observed);
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout / 1000}s waiting for ${observed.step}`);
    await sleep(POLL);
  }
}

async function restartFromMenu(page, panel, statuses, observed, timeout) {
  const before = (await statuses()).length;
  await page.locator(".lm-MenuBar-item", { hasText: /^Kernel$/ }).click();
  const item = page.locator('.lm-Menu-item[data-command="kernelmenu:restart"]');
  await waitVisible(page, item, "the Kernel menu's Restart Kernel… item", observed, timeout);
  await item.click();
  // The confirmation, accepted; only this dialog is.
  observed.step = 'the "Restart Kernel?" confirmation';
  const shown = observed.dialogs.length;
  observed.acceptDialogs = [/^Restart Kernel\?$/];
  await waitUntil(page, observed, timeout, async () =>
    observed.dialogs.slice(shown).some((dialog) => dialog.startsWith("Restart Kernel?")));
  observed.acceptDialogs = [];
  // The restart is under way once the indicator has left idle; then it must come back to idle.
  observed.step = "the kernel's status to leave idle (the restart under way)";
  await waitUntil(page, observed, timeout, async () =>
    (await statuses()).slice(before).some((status) => status !== "idle"));
  const idle = panel.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]');
  await waitVisible(page, idle, "the kernel to be idle after the restart", observed, timeout);
  return before;
}

async function scenario(page, options, observed) {
  const timeout = options.timeout;
  const sockets = [];
  // The execution states the kernel WebSockets brought (JSON frames: JupyterLab's server speaks the legacy
  // protocol to the page), and how those sockets closed.
  const received = [];
  page.on("websocket", (ws) => {
    if (!KERNEL_SOCKET.test(ws.url())) return;
    sockets.push(ws.url());
    ws.on("framereceived", ({ payload }) => {
      const state = /"execution_state":\s*"(\w+)"/.exec(typeof payload === "string" ? payload : "");
      if (state) received.push(state[1]);
    });
    ws.on("close", () => received.push("(socket closed)"));
  });
  const panel = await openNotebook(page, options, observed);
  const statuses = await recordStatuses(page);
  await runCell(page, panel, 0, "x = 6 * 7; print(x)", "42", observed, timeout);

  // 1. A restart the user asked for: back to idle, a fresh kernel (no x), and no dialog but the confirmation.
  const socketsBefore = sockets.length;
  const from = await restartFromMenu(page, panel, statuses, observed, timeout);
  await runCell(page, panel, 1, "print('x' in globals(), 6 * 7)", "False 42", observed, timeout);
  await settle(page, observed, SETTLE);
  observed.restart = {
    statuses: (await statuses()).slice(from),
    received: received.splice(0),
    kernel_websockets_opened: sockets.length - socketsBefore,
    output: observed.output,
    dialogs: observed.dialogs.slice(),
  };
  await page.screenshot({ path: options.screenshot });
  observed.screenshot = options.screenshot;

  // 2. A death: the kernel's process exits. Whatever dialog follows is accepted and recorded.
  const beforeDeath = (await statuses()).length;
  const dialogsBefore = observed.dialogs.length;
  const socketsBeforeDeath = sockets.length;
  observed.acceptDialogs = [/./];
  const cell = panel.locator(".jp-Notebook .jp-CodeCell").nth(2);
  await waitVisible(page, cell.locator(".cm-content"), "the editor of cell 3", observed, timeout);
  await cell.locator(".cm-content").click();
  await page.keyboard.insertText("import os; os._exit(1)");
  await page.keyboard.press("Shift+Enter");
  observed.step = "JupyterLab to show the kernel's death (a dialog, or its status dead)";
  const deadline = Date.now() + DEATH_WAIT;
  for (;;) {
    await handleDialogs(page, observed);
    const seen = (await statuses()).slice(beforeDeath);
    if (observed.dialogs.length > dialogsBefore || seen.includes("dead")) break;
    if (Date.now() > deadline) break;
    await sleep(POLL);
  }
  await settle(page, observed, SETTLE);
  observed.death = {
    statuses: (await statuses()).slice(beforeDeath),
    received: received.splice(0),
    dialogs: observed.dialogs.slice(dialogsBefore),
    kernel_websockets_opened: sockets.length - socketsBeforeDeath,
    status_bar: await statusBar(page),
  };
}

drive("jupyterlab_restart.js", process.argv.slice(2), scenario).catch((error) => {
  console.error(error);
  process.exit(1);
});

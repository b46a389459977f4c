// The page of the enchannel test: enchannel-socketio-backend 0.1.0, as published on npm, bundled for the
// browser by enchannel_page.js. It runs one session against the relay the page was loaded from and resolves
// with what it saw; enchannel_page.js prints that as JSON.
"use strict";

const backend = require("enchannel-socketio-backend");

function randomId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

const session = randomId();

function message(msgType, content, parentHeader = {}) {
  return {
    header: { msg_id: randomId(), msg_type: msgType, session, username: "enchannel", version: "5.0" },
    parent_header: parentHeader,
    metadata: {},
    content,
  };
}

function waitFor(what, predicate, timeout) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const check = () => {
      const found = predicate();
      if (found) resolve(found);
      else if (Date.now() - started > timeout) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(check, 20);
    };
    check();
  });
}

function replyTo(list, request, type) {
  return list.find((msg) => msg.parent_header.msg_id === request.header.msg_id && (!type || msg.header.msg_type === type));
}

async function run(endpoint, { timeout, stdinTimeout }, result) {
  const seen = { shell: [], iopub: [], stdio: [], control: [] };

  result.kernelId = await backend.spawn(endpoint, "python3");
  const channels = await backend.connect(endpoint, result.kernelId);
  const subscriptions = Object.keys(seen).map((name) => channels[name].subscribe((msg) => seen[name].push(msg)));

  // kernel_info_request until the reply arrives on shell and its status on iopub, twice in a row half a second
  // apart: /iopub/<id> may join after the first request's status went out (result.kernelInfoAttempts).
  let infoReply = null;
  let confirmed = 0;
  result.kernelInfoAttempts = 0;
  const deadline = Date.now() + timeout;
  while (confirmed < 2 && Date.now() < deadline) {
    result.kernelInfoAttempts += 1;
    const info = message("kernel_info_request", {});
    channels.shell.next(info);
    try {
      await waitFor(
        "kernel_info round trip",
        () => replyTo(seen.iopub, info, "status") && replyTo(seen.shell, info, "kernel_info_reply"),
        2000,
      );
      infoReply = replyTo(seen.shell, info, "kernel_info_reply");
      confirmed += 1;
      if (confirmed < 2) await new Promise((resolve) => setTimeout(resolve, 500));
    } catch {
      confirmed = 0;
    }
  }
  if (confirmed < 2) throw new Error(`no kernel_info round trip on shell and iopub within ${timeout} ms`);
  result.kernelInfo = {
    type: infoReply.header.msg_type,
    status: infoReply.content.status,
    language: infoReply.content.language_info.name,
    frozen: Object.isFrozen(infoReply) && Object.isFrozen(infoReply.content),
  };

  const execute = message("execute_request", {
    code: "print('hello from enchannel, ünïcödé 🎉')\n6 * 7",
    silent: false,
    store_history: true,
    user_expressions: {},
    allow_stdin: false,
  });
  channels.shell.next(execute);
  const executeReply = await waitFor("execute_reply", () => replyTo(seen.shell, execute, "execute_reply"), timeout);
  await waitFor("idle", () => seen.iopub.find((m) => m.parent_header.msg_id === execute.header.msg_id && m.content.execution_state === "idle"), timeout);
  const outputs = seen.iopub.filter((m) => m.parent_header.msg_id === execute.header.msg_id);
  result.execute = {
    reply: executeReply.content.status,
    stream: outputs.filter((m) => m.header.msg_type === "stream").map((m) => m.content.text).join(""),
    result: outputs.filter((m) => m.header.msg_type === "execute_result").map((m) => m.content.data["text/plain"]),
    types: outputs.map((m) => m.header.msg_type),
  };

  if (stdinTimeout > 0) {
    // input() through /stdio/<id>: enchannel joins it on a different socket.io connection than /shell/<id>.
    const asking = message("execute_request", {
      code: "name = input('name? ')\nprint('hello', name)",
      silent: false,
      store_history: false,
      user_expressions: {},
      allow_stdin: true,
    });
    channels.shell.next(asking);
    let prompt = null;
    try {
      prompt = await waitFor("input_request", () => replyTo(seen.stdio, asking, "input_request"), stdinTimeout);
    } catch {
      prompt = null;
    }
    if (prompt) {
      channels.stdio.next(message("input_reply", { value: "enchannel" }, prompt.header));
    } else {
      channels.control.next(message("interrupt_request", {}));
    }
    const reply = await waitFor("execute_reply", () => replyTo(seen.shell, asking, "execute_reply"), timeout);
    await waitFor("idle", () => seen.iopub.find((m) => m.parent_header.msg_id === asking.header.msg_id && m.content.execution_state === "idle"), timeout);
    result.stdin = {
      prompt: prompt ? prompt.content.prompt : null,
      reply: reply.content.status,
      ename: reply.content.ename ?? null,
      stream: seen.iopub
        .filter((m) => m.parent_header.msg_id === asking.header.msg_id && m.header.msg_type === "stream")
        .map((m) => m.content.text)
        .join(""),
    };
  }

  subscriptions.forEach((subscription) => subscription.unsubscribe());
  await backend.disconnect(channels);
  result.disconnected = true;
  // How many socket.io clients the relay still counts for the kernel once enchannel has disconnected.
  const connections = async () => {
    const kernels = await (await fetch(`${endpoint}api/kernels`, { cache: "no-store" })).json();
    return kernels.find((kernel) => kernel.id === result.kernelId)?.connections ?? null;
  };
  const settled = Date.now() + 3000;
  result.connectionsAfterDisconnect = await connections();
  while (result.connectionsAfterDisconnect !== 0 && Date.now() < settled) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    result.connectionsAfterDisconnect = await connections();
  }
  await backend.shutdown(endpoint, result.kernelId);
  result.shutdown = "ok";
}

window.runEnchannel = async (endpoint, options) => {
  const result = {};
  try {
    await run(endpoint, options, result);
    return { ok: true, result };
  } catch (error) {
    if (result.kernelId && !result.shutdown) {
      // Do not leave the kernel behind when the session failed half way.
      await fetch(`${endpoint}shutdown/${result.kernelId}`).catch(() => {});
    }
    return { ok: false, result, error: String(error && error.stack ? error.stack : error) };
  }
};

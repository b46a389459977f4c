// kernel-relay demo console: one kernel, its four channels over one socket.io connection.
// No framework and no inline script (the page's Content-Security-Policy forbids it). Kernel output is
// always inserted as text or as data: images, never as HTML.

import { Manager } from "./vendor/socket.io-client.esm.min.js";

const CHANNELS = ["shell", "iopub", "stdin", "control"];
const IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/svg+xml"];

const ui = {
  spec: document.getElementById("kernelspec"),
  start: document.getElementById("start"),
  interrupt: document.getElementById("interrupt"),
  shutdown: document.getElementById("shutdown"),
  status: document.getElementById("status"),
  cells: document.getElementById("cells"),
  intro: document.getElementById("intro"),
  code: document.getElementById("code"),
  run: document.getElementById("run"),
  nextPrompt: document.getElementById("next-prompt"),
};

// The page may sit under a prefix behind a proxy: every URL is relative to it.
const base = new URL(".", window.location.href);
const session = randomId();
const TOKEN_KEY = "kernel-relay-token";
const token = takeToken();

let kernel = null; // { id, name, manager, sockets, cells: Map(msg_id -> Cell), state }

// ---------------------------------------------------------------------------------------------------------
// Small helpers

function randomId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// A relay started with a token needs it on every request. The page is opened once as /#token=<token>
// (a fragment never reaches servers, logs or Referer headers); the token is kept for this tab only and
// removed from the address bar, so it is not bookmarked or shared with a screenshot.
function takeToken() {
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  const given = fragment.get("token");
  if (given) {
    sessionStorage.setItem(TOKEN_KEY, given);
    fragment.delete("token");
    const rest = fragment.toString();
    const { pathname, search } = window.location;
    history.replaceState(null, "", `${pathname}${search}${rest ? `#${rest}` : ""}`);
    return given;
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

async function getJSON(path) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const response = await fetch(new URL(path, base), { cache: "no-store", headers });
  if (response.status === 401) {
    throw new Error(
      token ? "the relay refused this page's token" : "this relay needs a token: open this page as /#token=<token>",
    );
  }
  let body = {};
  try {
    body = await response.json();
  } catch {
    // a proxy's HTML error page: fall through to the status line
  }
  if (!response.ok) {
    throw new Error(body.error || `${response.status} ${response.statusText}`);
  }
  return body;
}

function message(channel, msgType, content, parentHeader = {}) {
  return {
    header: {
      msg_id: randomId(),
      msg_type: msgType,
      session,
      username: "demo",
      date: new Date().toISOString(),
      version: "5.3",
    },
    parent_header: parentHeader,
    metadata: {},
    content,
    channel,
  };
}

function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.status.textContent = text ?? state;
}

function refreshControls() {
  const live = kernel !== null && kernel.state !== "dead";
  ui.spec.disabled = live || ui.spec.options.length === 0 || !ui.spec.value;
  ui.start.disabled = live || !ui.spec.value;
  ui.interrupt.disabled = !live || !kernel.connected;
  ui.shutdown.disabled = !live;
  ui.code.disabled = !live || !kernel.connected;
  ui.code.placeholder = ui.code.disabled ? "Start a kernel, then type code here" : "Type code; Shift+Enter runs it";
  ui.run.disabled = ui.code.disabled;
}

function scrollToEnd() {
  ui.cells.scrollTop = ui.cells.scrollHeight;
}

// ---------------------------------------------------------------------------------------------------------
// ANSI escape sequences (IPython colours its tracebacks): SGR colours become spans, anything else is dropped.

const ESCAPE = /\x1b\[([0-9;]*)([A-Za-z])|\x1b[^[]/g;

function xterm256(n) {
  if (n < 16) return null; // handled by classes
  if (n >= 232) {
    const level = 8 + (n - 232) * 10;
    return `rgb(${level}, ${level}, ${level})`;
  }
  const steps = [0, 95, 135, 175, 215, 255];
  const i = n - 16;
  return `rgb(${steps[Math.floor(i / 36)]}, ${steps[Math.floor(i / 6) % 6]}, ${steps[i % 6]})`;
}

function applySgr(style, params) {
  const codes = params === "" ? [0] : params.split(";").map((p) => Number(p || 0));
  for (let i = 0; i < codes.length; i += 1) {
    const code = codes[i];
    if (code === 0) Object.assign(style, { bold: false, italic: false, underline: false, fg: null, bg: null });
    else if (code === 1) style.bold = true;
    else if (code === 3) style.italic = true;
    else if (code === 4) style.underline = true;
    else if (code === 22) style.bold = false;
    else if (code === 23) style.italic = false;
    else if (code === 24) style.underline = false;
    else if (code >= 30 && code <= 37) style.fg = code - 30;
    else if (code >= 90 && code <= 97) style.fg = code - 90 + 8;
    else if (code === 39) style.fg = null;
    else if (code >= 40 && code <= 47) style.bg = code - 40;
    else if (code >= 100 && code <= 107) style.bg = code - 100 + 8;
    else if (code === 49) style.bg = null;
    else if ((code === 38 || code === 48) && codes[i + 1] === 5) {
      const n = codes[i + 2] ?? 0;
      const value = n < 16 ? n : xterm256(n);
      style[code === 38 ? "fg" : "bg"] = value;
      i += 2;
    } else if ((code === 38 || code === 48) && codes[i + 1] === 2) {
      const [r, g, b] = codes.slice(i + 2, i + 5).map((v) => v ?? 0);
      style[code === 38 ? "fg" : "bg"] = `rgb(${r}, ${g}, ${b})`;
      i += 4;
    }
  }
}

function styledSpan(style, text) {
  if (!style.bold && !style.italic && !style.underline && style.fg === null && style.bg === null) {
    return document.createTextNode(text);
  }
  const span = element("span", "", text);
  if (style.bold) span.classList.add("ansi-bold");
  if (style.italic) span.classList.add("ansi-italic");
  if (style.underline) span.classList.add("ansi-underline");
  for (const [key, value] of [["fg", style.fg], ["bg", style.bg]]) {
    if (typeof value === "number") span.classList.add(`ansi-${key}-${value}`);
    else if (typeof value === "string") span.style[key === "fg" ? "color" : "backgroundColor"] = value;
  }
  return span;
}

function appendAnsi(target, text) {
  const style = { bold: false, italic: false, underline: false, fg: null, bg: null };
  let last = 0;
  for (const match of text.matchAll(ESCAPE)) {
    if (match.index > last) target.append(styledSpan(style, text.slice(last, match.index)));
    if (match[2] === "m") applySgr(style, match[1]);
    last = match.index + match[0].length;
  }
  if (last < text.length) target.append(styledSpan(style, text.slice(last)));
}

// ---------------------------------------------------------------------------------------------------------
// Cells: the code that ran and what it produced

class Cell {
  constructor(code) {
    this.node = element("section", "cell running");
    this.prompt = element("div", "prompt", "In [*]:");
    this.node.append(this.prompt, element("pre", "source", code));
    this.lastStream = null;
    this.displays = new Map(); // display_id -> output node
    this.clearPending = false;
    ui.intro?.remove();
    ui.cells.append(this.node);
    scrollToEnd();
  }

  add(node, withPrompt = null) {
    if (this.clearPending) this.clear();
    if (withPrompt) {
      this.node.append(element("div", "prompt out", withPrompt));
    }
    this.node.append(node);
    scrollToEnd();
    return node;
  }

  clear() {
    this.clearPending = false;
    for (const node of [...this.node.querySelectorAll(".output, .prompt.out, .input-request")]) node.remove();
    this.lastStream = null;
    this.displays.clear();
  }

  stream(name, text) {
    if (this.clearPending) this.clear();
    if (this.lastStream && this.lastStream.dataset.name === name && this.node.lastChild === this.lastStream) {
      appendAnsi(this.lastStream, text);
    } else {
      this.lastStream = this.add(element("pre", `output stream ${name}`));
      this.lastStream.dataset.name = name;
      appendAnsi(this.lastStream, text);
    }
    scrollToEnd();
  }

  mime(content, kind, count) {
    const node = element("div", `output ${kind}`);
    renderBundle(node, content.data || {});
    const prompt = kind === "execute-result" ? `Out[${count ?? " "}]:` : null;
    this.lastStream = null;
    const displayId = content.transient?.display_id;
    if (displayId) this.displays.set(displayId, node);
    return this.add(node, prompt);
  }

  update(content) {
    const node = this.displays.get(content.transient?.display_id);
    if (!node) return;
    node.replaceChildren();
    renderBundle(node, content.data || {});
  }

  error(content) {
    const node = element("pre", "output error");
    const traceback = content.traceback?.length
      ? content.traceback.join("\n")
      : `${content.ename}: ${content.evalue}`;
    appendAnsi(node, traceback);
    node.dataset.ename = content.ename ?? "";
    this.lastStream = null;
    this.add(node);
  }

  relayError(text) {
    this.add(element("pre", "output relay-error", text));
  }

  inputRequest(request, onAnswer) {
    const row = element("form", "input-request");
    const label = element("label", "", request.content.prompt || "");
    const field = element("input");
    field.type = request.content.password ? "password" : "text";
    field.autocomplete = "off";
    label.append(field);
    row.append(label);
    row.addEventListener("submit", (event) => {
      event.preventDefault();
      const value = field.value;
      row.replaceWith(element("pre", "output stream stdin", `${request.content.prompt || ""}${request.content.password ? "••••" : value}\n`));
      onAnswer(value);
    });
    this.add(row);
    field.focus();
  }

  finish(count, status) {
    this.node.classList.remove("running");
    this.node.dataset.status = status;
    this.prompt.textContent = `In [${count ?? " "}]:`;
  }
}

function renderBundle(node, data) {
  const imageType = IMAGE_TYPES.find((type) => typeof data[type] === "string");
  if (imageType) {
    const payload = data[imageType];
    const img = element("img");
    img.alt = data["text/plain"] || imageType;
    img.src = imageType === "image/svg+xml"
      ? `data:${imageType};charset=utf-8,${encodeURIComponent(payload)}`
      : `data:${imageType};base64,${payload.replace(/\s+/g, "")}`;
    node.append(img);
    return;
  }
  const text = data["text/plain"] ?? (Object.keys(data).length ? `[${Object.keys(data).join(", ")}]` : "");
  const pre = element("pre", "text", "");
  appendAnsi(pre, text);
  node.replaceChildren(pre);
}

// ---------------------------------------------------------------------------------------------------------
// The kernel: spawn, connect, messages, interrupt, shutdown

function cellFor(msg) {
  return kernel?.cells.get(msg.parent_header?.msg_id) ?? null;
}

function onIopub(msg) {
  const type = msg.header?.msg_type;
  const content = msg.content || {};
  if (type === "status") {
    if (content.execution_state === "dead") {
      kernelGone();
      return;
    }
    // Only the kernel-wide state: requests of other clients also move it.
    kernel.state = content.execution_state;
    setStatus(content.execution_state);
    return;
  }
  const cell = cellFor(msg);
  if (!cell) return; // output of another client's request
  switch (type) {
    case "stream":
      cell.stream(content.name, content.text);
      break;
    case "execute_input":
      cell.prompt.textContent = `In [${content.execution_count}]:`;
      break;
    case "execute_result":
      cell.mime(content, "execute-result", content.execution_count);
      break;
    case "display_data":
      cell.mime(content, "display");
      break;
    case "update_display_data":
      for (const other of kernel.cells.values()) other.update(content);
      break;
    case "clear_output":
      if (content.wait) cell.clearPending = true;
      else cell.clear();
      break;
    case "error":
      cell.error(content);
      break;
    default:
      break;
  }
}

function onShell(msg) {
  if (msg.header?.msg_type !== "execute_reply") return;
  const cell = cellFor(msg);
  if (!cell) return;
  cell.finish(msg.content.execution_count, msg.content.status);
  if (msg.content.execution_count !== undefined) {
    ui.nextPrompt.textContent = `In [${msg.content.execution_count + 1}]:`;
  }
}

function onStdin(msg) {
  if (msg.header?.msg_type !== "input_request") return;
  const cell = cellFor(msg) ?? [...kernel.cells.values()].at(-1);
  if (!cell) return;
  cell.inputRequest(msg, (value) => {
    kernel.sockets.stdin.emit("msg", message("stdin", "input_reply", { value }, msg.header));
    ui.code.focus();
  });
}

function connect(id, name) {
  // One Manager, so the four namespaces share one Engine.IO connection: the relay then treats them as one
  // client, and the kernel's input_request reaches the stdin namespace of the client that ran the code.
  const manager = new Manager(window.location.origin, {
    path: `${base.pathname}socket.io/`,
    reconnectionAttempts: 5,
  });
  kernel = { id, name, manager, sockets: {}, cells: new Map(), state: "starting", connected: false };
  let joined = 0;
  for (const channel of CHANNELS) {
    const socket = manager.socket(`/${channel}/${id}`, token ? { auth: { token } } : {});
    kernel.sockets[channel] = socket;
    socket.on("connect", () => {
      joined += 1;
      if (joined === CHANNELS.length && kernel?.id === id) {
        kernel.connected = true;
        if (kernel.state === "starting") {
          kernel.state = "idle";
          setStatus("idle");
        }
        refreshControls();
        ui.code.focus();
      }
    });
    socket.on("connect_error", (error) => {
      if (kernel?.id === id) setStatus("error", `cannot join ${channel}: ${error.message}`);
    });
    socket.on("disconnect", (reason) => {
      if (reason === "io server disconnect" && kernel?.id === id) kernelGone();
    });
    socket.on("msg", (msg) => {
      if (kernel?.id !== id) return;
      if (channel === "iopub") onIopub(msg);
      else if (channel === "shell") onShell(msg);
      else if (channel === "stdin") onStdin(msg);
    });
    socket.on("error", (problem) => {
      const cell = problem?.msg_id ? kernel?.cells.get(problem.msg_id) : null;
      const text = `relay: ${problem?.message ?? problem}`;
      if (cell) cell.relayError(text);
      else setStatus("error", text);
    });
  }
}

function kernelGone() {
  if (!kernel) return;
  const { manager, cells } = kernel;
  kernel.state = "dead";
  kernel.connected = false;
  for (const cell of cells.values()) {
    if (cell.node.classList.contains("running")) cell.finish(null, "aborted");
  }
  manager.disconnect?.();
  for (const socket of Object.values(kernel.sockets)) socket.disconnect();
  setStatus("dead", `${kernel.name} ${kernel.shuttingDown ? "shut down" : "died"}`);
  refreshControls();
}

async function start() {
  const name = ui.spec.value;
  if (!name) return;
  ui.start.disabled = true;
  ui.spec.disabled = true;
  setStatus("starting", `starting ${name}…`);
  try {
    const { id } = await getJSON(`spawn/${encodeURIComponent(name)}`);
    ui.cells.replaceChildren();
    ui.nextPrompt.textContent = "In [1]:";
    connect(id, name);
    ui.status.title = `kernel ${id}`;
  } catch (error) {
    setStatus("error", `could not start ${name}: ${error.message}`);
    kernel = null;
  }
  refreshControls();
}

function run() {
  const code = ui.code.value;
  if (!kernel?.connected || code.trim() === "") return;
  const request = message("shell", "execute_request", {
    code,
    silent: false,
    store_history: true,
    user_expressions: {},
    allow_stdin: true,
    stop_on_error: true,
  });
  kernel.cells.set(request.header.msg_id, new Cell(code));
  kernel.sockets.shell.emit("msg", request);
  ui.code.value = "";
}

function interrupt() {
  if (!kernel?.connected) return;
  kernel.sockets.control.emit("msg", message("control", "interrupt_request", {}));
}

async function shutdown() {
  if (!kernel) return;
  const { id } = kernel;
  kernel.shuttingDown = true;
  ui.shutdown.disabled = true;
  setStatus("busy", "shutting down…");
  try {
    await getJSON(`shutdown/${encodeURIComponent(id)}`);
    kernelGone();
  } catch (error) {
    kernel.shuttingDown = false;
    setStatus("error", `shutdown failed: ${error.message}`);
    refreshControls();
  }
}

async function loadKernelspecs() {
  try {
    // Jupyter Server's shape: {"default": name, "kernelspecs": {name: {name, spec: {display_name, ...}}}}
    const listing = await getJSON("api/kernelspecs");
    const kernelspecs = Object.values(listing.kernelspecs).sort((a, b) => a.name.localeCompare(b.name));
    ui.spec.replaceChildren(
      ...kernelspecs.map((spec) => {
        const option = element("option", "", spec.spec.display_name || spec.name);
        option.value = spec.name;
        return option;
      }),
    );
    const preferred = kernelspecs.find((spec) => spec.name === listing.default) ?? kernelspecs[0];
    if (preferred) ui.spec.value = preferred.name;
    if (!kernelspecs.length) {
      const none = element("option", "", "No kernelspecs installed");
      none.value = "";
      ui.spec.replaceChildren(none);
    }
  } catch (error) {
    const unavailable = element("option", "", "Kernelspecs unavailable");
    unavailable.value = ""; // nothing to start
    ui.spec.replaceChildren(unavailable);
    setStatus("error", `kernelspecs: ${error.message}`);
  }
  refreshControls();
}

ui.start.addEventListener("click", start);
ui.interrupt.addEventListener("click", interrupt);
ui.shutdown.addEventListener("click", shutdown);
ui.run.addEventListener("click", run);
ui.spec.addEventListener("change", refreshControls);
ui.code.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && event.shiftKey) {
    event.preventDefault();
    run();
  }
});

loadKernelspecs();

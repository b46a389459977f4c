// A kernel round trip through the relay with a stock socket.io-client: kernel_info, execute with output,
// stdin, interrupt over control, and binary buffers both ways. Prints one JSON object of observations.
// Usage: node roundtrip.js <relay url> <kernel id> <comma-separated transports>
"use strict";
const { io } = require("socket.io-client");

const [url, kernelId, transportList] = process.argv.slice(2);
const transports = transportList.split(",");
const channels = ["shell", "stdin", "iopub", "control"];
const received = Object.fromEntries(channels.map((channel) => [channel, []]));
const errors = [];
let waiters = [];

function settle() {
  waiters = waiters.filter((waiter) => {
    const value = waiter.predicate();
    if (value) {
      clearTimeout(waiter.timer);
      waiter.resolve(value);
      return false;
    }
    return true;
  });
}

function waitFor(predicate, what, timeout = 30000) {
  return new Promise((resolve, reject) => {
    const value = predicate();
    if (value) return resolve(value);
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeout);
    waiters.push({ predicate, resolve, timer });
  });
}

const sockets = {};
for (const channel of channels) {
  const socket = io(`${url}/${channel}/${kernelId}`, { transports, reconnection: false });
  socket.on("msg", (msg) => {
    received[channel].push(msg);
    settle();
  });
  socket.on("error", (error) => errors.push(error));
  socket.on("connect", settle);
  sockets[channel] = socket;
}

let counter = 0;
function send(channel, msgType, content, buffers) {
  const msgId = `node-${process.pid}-${++counter}`;
  const msg = { header: { msg_id: msgId, msg_type: msgType }, content };
  if (buffers) msg.buffers = buffers;
  sockets[channel].emit("msg", msg);
  return msgId;
}

const replyTo = (channel, msgId) =>
  waitFor(() => received[channel].find((m) => m.parent_header.msg_id === msgId), `${channel} reply to ${msgId}`);
const iopubFor = (msgId, type) =>
  received.iopub.filter((m) => m.parent_header.msg_id === msgId && (!type || m.header.msg_type === type));
const idle = (msgId) =>
  waitFor(() => iopubFor(msgId, "status").some((m) => m.content.execution_state === "idle"), `idle after ${msgId}`);

async function execute(code, extra = {}) {
  const msgId = send("shell", "execute_request", { code, silent: false, allow_stdin: false, ...extra });
  const reply = await replyTo("shell", msgId);
  await idle(msgId);
  return { msgId, reply };
}

const bytesOf = (buffer) => Array.from(new Uint8Array(buffer));

async function main() {
  await Promise.all(
    channels.map((channel) => waitFor(() => sockets[channel].connected, `${channel} connected`, 15000)),
  );
  const results = { engine_sids: new Set(channels.map((c) => sockets[c].io.engine.id)).size };

  const info = await replyTo("shell", send("shell", "kernel_info_request", {}));
  results.kernel_info = { type: info.header.msg_type, status: info.content.status, language: info.content.language_info.name };

  const sum = await execute("1+1");
  results.execute = {
    reply: sum.reply.content.status,
    result: iopubFor(sum.msgId, "execute_result").map((m) => m.content.data["text/plain"]),
  };

  const asking = send("shell", "execute_request", { code: "print('hi', input('name? '))", allow_stdin: true });
  const request = await waitFor(() => received.stdin.find((m) => m.parent_header.msg_id === asking), "input_request");
  send("stdin", "input_reply", { value: "node" });
  await replyTo("shell", asking);
  await idle(asking);
  results.stdin = {
    prompt: request.content.prompt,
    output: iopubFor(asking, "stream").map((m) => m.content.text).join(""),
  };

  // Interrupt once the cell's own output shows it is in user code, and let it finish (idle) before the
  // next request: ipykernel aborts requests that arrive while it is still handling the interrupt.
  const sleeping = send("shell", "execute_request", { code: "import time; print('sleeping', flush=True); time.sleep(60)" });
  await waitFor(() => iopubFor(sleeping, "stream").length > 0, "the cell sleeping");
  const interrupt = await replyTo("control", send("control", "interrupt_request", {}));
  const interrupted = await replyTo("shell", sleeping);
  await idle(sleeping);
  results.interrupt = { reply: interrupt.header.msg_type, ename: interrupted.content.ename };

  const display = await execute(process.env.BUFFER_DISPLAY_CODE);
  // The kernel publishes this display from user code; wait for it rather than assume it precedes idle.
  const shown = await waitFor(() => iopubFor(display.msgId, "display_data")[0], "display_data", 10000).catch(
    () => null,
  );
  results.display_buffers = shown ? shown.buffers.map(bytesOf) : null;
  if (!shown) {
    results.display_debug = {
      reply: display.reply.content,
      iopub: received.iopub.map((m) => [m.header.msg_type, m.parent_header.msg_id]),
      display_msg_id: display.msgId,
    };
    if (process.env.ROUNDTRIP_DEBUG) require("fs").writeFileSync(process.env.ROUNDTRIP_DEBUG, JSON.stringify(results));
  }

  await execute(process.env.ECHO_COMM_CODE);
  const commId = `node-comm-${process.pid}`;
  send("shell", "comm_open", { comm_id: commId, target_name: "relay-echo", data: {} });
  const sent = [Buffer.from([0, 1, 2, 255]), Buffer.alloc(1000, 7)];
  const commMsg = send("shell", "comm_msg", { comm_id: commId, data: {} }, sent);
  const echoed = await waitFor(() => iopubFor(commMsg, "comm_msg")[0], "echoed comm_msg");
  results.echoed_buffers = echoed.buffers.map(bytesOf);
  results.sent_buffers = sent.map(bytesOf);
  results.errors = errors;

  for (const channel of channels) sockets[channel].disconnect();
  process.stdout.write(JSON.stringify(results) + "\n");
}

main().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`${error.stack}\nreceived: ${JSON.stringify(Object.fromEntries(
      channels.map((c) => [c, received[c].map((m) => m.header.msg_type)])))}\n`);
    process.exit(1);
  },
);

// A kernel round trip through the relay with one socket.io-client generation (1, 2 or 4): kernel_info,
// execute with output, stdin. Prints one JSON object of observations.
// Usage: node legacy/roundtrip.js <1|2|4> <relay url> <kernel id> <comma-separated transports>
"use strict";
const { client, until } = require("./clients");

const [version, url, kernelId, transportList] = process.argv.slice(2);
const sio = client(version);
const transports = transportList.split(",");
const channels = ["shell", "stdin", "iopub"];
const received = Object.fromEntries(channels.map((channel) => [channel, []]));
const errors = [];

const sockets = {};
for (const channel of channels) {
  const socket = sio.connect(`${url}/${channel}/${kernelId}`, transports);
  socket.on("msg", (msg) => received[channel].push(msg));
  socket.on("error", (error) => errors.push(String(error)));
  sockets[channel] = socket;
}

let counter = 0;
function send(channel, msgType, content) {
  const msgId = `legacy-${version}-${process.pid}-${++counter}`;
  sockets[channel].emit("msg", { header: { msg_id: msgId, msg_type: msgType }, content });
  return msgId;
}

const replyOf = (channel, msgId) => received[channel].find((m) => m.parent_header.msg_id === msgId);
const iopubFor = (msgId, type) =>
  received.iopub.filter((m) => m.parent_header.msg_id === msgId && (!type || m.header.msg_type === type));
const isIdle = (msgId) => iopubFor(msgId, "status").some((m) => m.content.execution_state === "idle");

async function main() {
  await until(() => channels.every((channel) => sockets[channel].connected), "all channels connected", 20000);
  const results = {
    packageVersion: sio.packageVersion,
    engine_sids: new Set(channels.map((c) => sio.engineOf(sockets[c]).id)).size,
  };

  const infoId = send("shell", "kernel_info_request", {});
  await until(() => replyOf("shell", infoId), "kernel_info_reply", 30000);
  const info = replyOf("shell", infoId);
  results.kernel_info = {
    type: info.header.msg_type,
    status: info.content.status,
    language: info.content.language_info.name,
  };

  const runId = send("shell", "execute_request", { code: "print('out', 6 * 7, 'ü')\n'é🎉' * 2", silent: false });
  await until(() => replyOf("shell", runId) && isIdle(runId), "execute reply and idle", 30000);
  results.execute = {
    reply: replyOf("shell", runId).content.status,
    stream: iopubFor(runId, "stream").map((m) => m.content.text).join(""),
    result: iopubFor(runId, "execute_result").map((m) => m.content.data["text/plain"]),
  };

  const askId = send("shell", "execute_request", { code: "print('hi', input('name? '))", allow_stdin: true });
  await until(() => replyOf("stdin", askId), "input_request", 30000);
  const request = replyOf("stdin", askId);
  send("stdin", "input_reply", { value: `node ${version}` });
  await until(() => replyOf("shell", askId) && isIdle(askId), "reply after input", 30000);
  results.stdin = {
    prompt: request.content.prompt,
    output: iopubFor(askId, "stream").map((m) => m.content.text).join(""),
  };
  if (transports.includes("polling") && transports.includes("websocket")) {
    await until(() => sio.engineOf(sockets.shell).transport.name === "websocket", "the upgrade", 15000);
  }
  results.transport = sio.engineOf(sockets.shell).transport.name;
  results.errors = errors;
  for (const channel of channels) sockets[channel].disconnect();
  return results;
}

const guard = setTimeout(() => {
  process.stderr.write("script timed out\n");
  process.exit(2);
}, 100000);
main().then(
  (results) => {
    clearTimeout(guard);
    process.stdout.write(JSON.stringify(results) + "\n");
    process.exit(0);
  },
  (error) => {
    process.stderr.write(`${error.stack}\nreceived: ${JSON.stringify(Object.fromEntries(
      channels.map((c) => [c, received[c].map((m) => m.header.msg_type)])))}\nerrors: ${JSON.stringify(errors)}\n`);
    process.exit(1);
  },
);

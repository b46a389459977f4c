// One execute over TLS with a stock socket.io-client and a token: its reply and its output.
// Usage: NODE_EXTRA_CA_CERTS=<cert.pem> node tls_round_trip.js <https url> <kernel id> <token> <transport>
"use strict";
const { io } = require("socket.io-client");

const [url, kernelId, token, transport] = process.argv.slice(2);
const options = { transports: [transport], reconnection: false, auth: { token } };
const shell = io(`${url}/shell/${kernelId}`, options);
const iopub = io(`${url}/iopub/${kernelId}`, options);
const result = { replies: [], outputs: [], errors: [], transport: null };

function finish() {
  shell.close();
  iopub.close();
  console.log(JSON.stringify(result));
  process.exit(0);
}

const timer = setTimeout(() => {
  result.errors.push("timed out");
  finish();
}, 30000);

iopub.on("msg", (msg) => {
  if (msg.header.msg_type === "stream") result.outputs.push(msg.content.text);
  if (result.replies.length && result.outputs.includes("42\n")) finish();
});
shell.on("msg", (msg) => {
  result.replies.push(msg.content.status);
  if (result.outputs.includes("42\n")) finish();
});
for (const socket of [shell, iopub]) {
  socket.on("connect_error", (error) => result.errors.push(String(error.message)));
}
let connected = 0;
const ready = () => {
  if (++connected < 2) return;
  result.transport = shell.io.engine.transport.name;
  shell.emit("msg", { header: { msg_type: "execute_request" }, content: { code: "print(40 + 2)" } });
};
shell.on("connect", ready);
iopub.on("connect", ready);
process.on("exit", () => clearTimeout(timer));

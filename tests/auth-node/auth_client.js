// Joins /shell/<id> of a relay that requires a token, the way each socket.io-client generation passes it,
// and asks for kernel_info. Prints one JSON object: {"status": <reply status>} or {"refused": <message>}.
// Usage: node auth_client.js <relay url> <kernel id> <token or ""> <client: 4 | 2 | 1>
// The clients come from tests/node (installed there from its package-lock.json).
"use strict";
const path = require("path");

const [url, kernelId, token, generation] = process.argv.slice(2);
const modules = path.join(__dirname, "..", "node", "node_modules");
const finish = (result) => {
  console.log(JSON.stringify(result));
  process.exit(0);
};
setTimeout(() => finish({ refused: "timeout" }), 20000);

let socket;
if (generation === "4") {
  const { io } = require(path.join(modules, "socket.io-client"));
  socket = io(`${url}/shell/${kernelId}`, {
    auth: token ? { token } : {},
    reconnection: false,
  });
  socket.on("connect_error", (error) => finish({ refused: error.message }));
} else {
  const io = require(path.join(modules, `socket.io-client-${generation}`));
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  socket = io(`${url}/shell/${kernelId}${query}`, { reconnection: false, forceNew: true });
  socket.on("error", (error) => finish({ refused: typeof error === "string" ? error : JSON.stringify(error) }));
}
socket.on("connect", () => {
  socket.emit("msg", { header: { msg_type: "kernel_info_request" }, content: {} });
});
socket.on("msg", (msg) => {
  if (msg.header.msg_type === "kernel_info_reply") finish({ status: msg.content.status });
});

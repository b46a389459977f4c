// socket.io-client 4.x against examples/conformance_server.py.
// Usage: node sio_conformance.js <base url> <polling|websocket>; prints one JSON object.
"use strict";
const { io } = require("socket.io-client");
const { once, ack, run } = require("./common_sio");

const [url, mode] = process.argv.slice(2);
const transports = mode === "websocket" ? ["websocket"] : ["polling", "websocket"];

run(async () => {
  const result = {};
  const main = io(url, { transports, auth: { token: "node" }, reconnection: false });
  const custom = io(url + "/custom", { transports, auth: { token: "custom" }, reconnection: false });
  const [mainAuth, customAuth] = await Promise.all([once(main, "auth"), once(custom, "auth")]);
  result.auth = mainAuth[0];
  result.customAuth = customAuth[0];
  result.sharedConnection = main.io === custom.io;

  const back = once(main, "message-back");
  main.emit("message", 1, "2", { bin: Buffer.from([1, 2]) }, Buffer.from([3]));
  result.messageBack = await back;
  result.ack = await ack(main, "message-with-ack", "é", Buffer.from([9]), [Buffer.from([])]);

  if (mode !== "websocket" && main.io.engine.transport.name !== "websocket") {
    await once(main.io.engine, "upgrade");
  }
  result.transport = main.io.engine.transport.name;

  // Leaving /custom keeps the connection and the main namespace working.
  custom.disconnect();
  const still = once(main, "message-back");
  main.emit("message", "still here");
  result.afterCustomLeft = await still;

  main.disconnect();
  return result;
});

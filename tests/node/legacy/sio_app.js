// One socket.io-client generation (1, 2 or 4) against tests/servers/socketio_app.py: "/" and a dynamic
// namespace on one connection, auth, events, acks, binary both ways, a refused namespace, server
// calls with acks, disconnects from both sides. Prints one JSON object.
// Usage: node legacy/sio_app.js <1|2|4> <base url> <polling|websocket> <room>
"use strict";
const { once, run } = require("../common_sio");
const { client, ackOf, until } = require("./clients");

const [version, url, mode, room] = process.argv.slice(2);
const sio = client(version);
const transports = mode === "websocket" ? ["websocket"] : ["polling", "websocket"];

run(async () => {
  const result = { packageVersion: sio.packageVersion };
  const main = sio.connect(url, transports);
  [result.mainWelcome] = await once(main, "welcome");
  const dyn = sio.connect(`${url}/dyn/${room}`, transports, { user: "node" });
  const [welcome] = await once(dyn, "welcome");
  await until(() => dyn.connected, "the dynamic namespace to be connected");
  result.welcome = welcome;
  result.sidMatches = welcome.sid === dyn.id;
  result.sharedConnection = sio.engineOf(main) === sio.engineOf(dyn);

  const forbidden = sio.connect(`${url}/dyn/forbidden`, transports);
  if (sio.legacy) {
    [result.refused] = await once(forbidden, "error");
  } else {
    const [error] = await once(forbidden, "connect_error");
    result.refused = { message: error.message, data: error.data };
  }

  const echoed = once(dyn, "echo-back");
  result.ack = await ackOf(dyn, "echo", 1, "é 🎉", { bin: Buffer.from([1, 2]) }, Buffer.from([3]));
  result.echoBack = await echoed;

  dyn.on("question", (...args) => {
    const reply = args.pop();
    result.question = args;
    reply("yes", Buffer.from([9, 8]), { nested: [Buffer.from([7])] });
  });
  const answer = once(dyn, "answer");
  dyn.emit("ask", 1, Buffer.from([0]));
  result.answer = await answer;

  if (mode !== "websocket") {
    await until(() => sio.engineOf(main).transport.name === "websocket", "the upgrade to WebSocket");
  }
  result.transport = sio.engineOf(main).transport.name;

  const other = sio.connect(`${url}/dyn/${room}-left`, transports);
  await once(other, "welcome");
  other.disconnect();
  let reasons = [];
  for (let i = 0; i < 100; i++) {
    [reasons] = await ackOf(main, "reasons");
    if (reasons.some(([name]) => name === `/dyn/${room}-left`)) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  result.leftReason = reasons.filter(([name]) => name === `/dyn/${room}-left`).map(([, why]) => why);

  const kicked = once(dyn, "disconnect");
  dyn.emit("kick");
  [result.kickReason] = await kicked;
  result.mainStillConnected = main.connected;
  [reasons] = await ackOf(main, "reasons");
  result.kickSeen = reasons.filter(([name]) => name === `/dyn/${room}`).map(([, why]) => why);

  main.disconnect();
  forbidden.close();
  return result;
});

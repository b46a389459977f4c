// socket.io-client 4.x against tests/servers/socketio_app.py: dynamic namespaces, refusal,
// server-side calls with acks, server-side and client-side namespace disconnects.
// Usage: node sio_app.js <base url> <polling|websocket> <room>; prints one JSON object.
"use strict";
const { io } = require("socket.io-client");
const { once, ack, run } = require("./common_sio");

const [url, mode, room] = process.argv.slice(2);
const transports = mode === "websocket" ? ["websocket"] : ["polling", "websocket"];

run(async () => {
  const result = {};
  const main = io(url, { transports, reconnection: false });
  await once(main, "welcome");
  const dyn = io(`${url}/dyn/${room}`, { transports, auth: { user: "node" }, reconnection: false });
  const [welcome] = await once(dyn, "welcome");
  result.welcome = welcome;
  result.sidMatches = welcome.sid === dyn.id;

  const forbidden = io(`${url}/dyn/forbidden`, { transports, reconnection: false });
  const [error] = await once(forbidden, "connect_error");
  result.refused = { message: error.message, data: error.data };

  // The server calls us; our ack (with binary) comes back to us as "answer".
  dyn.on("question", (...args) => {
    const reply = args.pop();
    result.question = args;
    reply("yes", Buffer.from([9, 8]), { nested: [Buffer.from([7])] });
  });
  const answer = once(dyn, "answer");
  dyn.emit("ask", 1, Buffer.from([0]));
  result.answer = await answer;

  // Client-side namespace disconnect: the server sees it, the connection stays.
  const other = io(`${url}/dyn/${room}-left`, { transports, reconnection: false });
  await once(other, "welcome");
  other.disconnect();
  let reasons = [];
  for (let i = 0; i < 50; i++) {
    [reasons] = await ack(main, "reasons");
    if (reasons.some(([name]) => name === `/dyn/${room}-left`)) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  result.leftReason = reasons.filter(([name]) => name === `/dyn/${room}-left`).map(([, why]) => why);

  // Server-side namespace disconnect.
  const kicked = once(dyn, "disconnect");
  dyn.emit("kick");
  [result.kickReason] = await kicked;
  result.mainStillConnected = main.connected;
  [reasons] = await ack(main, "reasons");
  result.kickSeen = reasons.filter(([name]) => name === `/dyn/${room}`).map(([, why]) => why);

  main.disconnect();
  return result;
});

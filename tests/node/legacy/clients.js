// The three socket.io-client generations under one call: 1.7.4 and 2.5.0 (socket.io protocol 4 over
// Engine.IO 3, installed as the npm aliases socket.io-client-1 and socket.io-client-2) and 4.x.
"use strict";

const PACKAGES = { 1: "socket.io-client-1", 2: "socket.io-client-2", 4: "socket.io-client" };

function client(version) {
  const pkg = PACKAGES[version];
  if (!pkg) throw new Error(`unknown socket.io-client generation ${version}`);
  const lib = require(pkg);
  // 4.x exports { io }; 1.x and 2.x export the lookup function itself (also as .connect).
  const lookup = version === "4" ? lib.io : lib.connect;
  return {
    version,
    packageVersion: require(`${pkg}/package.json`).version,
    legacy: version !== "4",
    // `auth` travels as the 4.x auth payload, or as the namespace query of the older clients.
    connect(url, transports, auth) {
      const options = { transports, reconnection: false };
      if (auth) {
        if (version === "4") options.auth = auth;
        else options.query = new URLSearchParams(auth).toString();
      }
      return lookup(url, options);
    },
    engineOf(socket) {
      return socket.io.engine;
    },
  };
}

function ackOf(socket, event, ...args) {
  // Emits with an ack callback (every generation) and resolves with the ack's arguments.
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ack for ${event}`)), 10000);
    socket.emit(event, ...args, (...reply) => {
      clearTimeout(timer);
      resolve(reply);
    });
  });
}

async function until(predicate, what, ms = 10000) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

module.exports = { client, ackOf, until };

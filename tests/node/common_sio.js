// Helpers shared by the socket.io interop scripts: bounded waits and a JSON view of binary values.
"use strict";

function plain(value) {
  // Buffers and ArrayBuffers become {"$bytes": [...]} so the Python test can compare them.
  if (Buffer.isBuffer(value)) return { $bytes: Array.from(value) };
  if (value instanceof ArrayBuffer) return { $bytes: Array.from(new Uint8Array(value)) };
  if (ArrayBuffer.isView(value)) return { $bytes: Array.from(new Uint8Array(value.buffer, value.byteOffset, value.byteLength)) };
  if (Array.isArray(value)) return value.map(plain);
  if (value && typeof value === "object") {
    const out = {};
    for (const [key, item] of Object.entries(value)) out[key] = plain(item);
    return out;
  }
  return value;
}

function once(emitter, event, ms = 10000) {
  // Resolves with the event's arguments, or rejects after `ms` milliseconds.
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    emitter.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args);
    });
  });
}

function ack(socket, event, ...args) {
  // Emits with an ack callback and resolves with all of the ack's arguments.
  return new Promise((resolve, reject) => {
    socket.timeout(10000).emit(event, ...args, (err, ...reply) => (err ? reject(err) : resolve(reply)));
  });
}

function run(main) {
  const guard = setTimeout(() => {
    process.stdout.write(JSON.stringify({ error: "script timed out" }) + "\n");
    process.exit(2);
  }, 30000);
  main().then(
    (result) => {
      clearTimeout(guard);
      process.stdout.write(JSON.stringify(plain(result)) + "\n");
      process.exit(0);
    },
    (error) => {
      clearTimeout(guard);
      process.stdout.write(JSON.stringify({ error: String(error && error.stack ? error.stack : error) }) + "\n");
      process.exit(1);
    }
  );
}

module.exports = { plain, once, ack, run };

#!/usr/bin/env node
// Sessions and a client's own restart with a real @jupyterlab/services 7.x,
// against any server speaking Jupyter Server's REST API and kernel WebSocket:
//
//   node sessions.js --base-url http://127.0.0.1:PORT --token TOKEN --protocol v1|legacy
//
// SessionManager.startNew -> execute -> kernel.restart() -> execute ->
// session shutdown.  Prints one JSON line: {"ok": true, ...what was seen} or
// {"ok": false, "error": ...} (exit 1).  The library's logs go to stderr.
'use strict';

const util = require('node:util');
const WebSocket = require('ws');
const { ServerConnection, KernelManager, SessionManager } = require('@jupyterlab/services');

const TIMEOUT_MS = 60 * 1000;

function options() {
  const { values } = util.parseArgs({
    options: {
      'base-url': { type: 'string' },
      token: { type: 'string', default: '' },
      protocol: { type: 'string', default: 'v1' }
    }
  });
  return { baseUrl: values['base-url'].replace(/\/?$/, '/'), token: values.token, protocol: values.protocol };
}

function within(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function evaluate(kernel, code) {
  const future = kernel.requestExecute({ code });
  let result = null;
  let stdout = '';
  future.onIOPub = msg => {
    if (msg.header.msg_type === 'execute_result') {
      result = msg.content.data['text/plain'];
    } else if (msg.header.msg_type === 'stream') {
      stdout += msg.content.text;
    }
  };
  const reply = await within(future.done, `execute ${code}`);
  return { status: reply.content.status, result, stdout };
}

async function main() {
  const opts = options();
  const toStderr = new console.Console({ stdout: process.stderr, stderr: process.stderr });
  console.log = console.debug = console.info = console.warn = toStderr.log.bind(toStderr);
  const sockets = [];
  class CountingWebSocket extends WebSocket {
    constructor(url, protocols, wsOptions) {
      super(url, opts.protocol === 'legacy' ? [] : protocols, wsOptions);
      sockets.push(String(url));
    }
  }
  const serverSettings = ServerConnection.makeSettings({
    baseUrl: opts.baseUrl,
    token: opts.token,
    appendToken: true,
    WebSocket: CountingWebSocket,
    fetch: globalThis.fetch,
    Request: globalThis.Request,
    Headers: globalThis.Headers
  });
  const kernelManager = new KernelManager({ serverSettings });
  const sessions = new SessionManager({ serverSettings, kernelManager });
  await within(sessions.ready, 'the session manager');
  const session = await within(
    sessions.startNew({ path: 'relay-test.ipynb', type: 'notebook', name: 'relay-test.ipynb', kernel: { name: 'python3' } }),
    'SessionManager.startNew'
  );
  const kernel = session.kernel;
  const before = await evaluate(kernel, "print('hello'); x = 6 * 7; x");
  const listed = await within(sessions.refreshRunning().then(() => Array.from(sessions.running())), 'listing');
  const statuses = [];
  kernel.statusChanged.connect((_, status) => statuses.push(status));
  const socketsBefore = sockets.length;
  await within(kernel.restart(), 'kernel.restart()');
  // Let what the restart sends arrive before reading the statuses.
  const after = await evaluate(kernel, "'x' in globals()");
  await new Promise(resolve => setTimeout(resolve, 500));
  const sessionId = session.id;
  const kernelId = kernel.id;
  await within(session.shutdown(), 'session shutdown');
  await within(sessions.refreshRunning(), 'listing after shutdown');
  const left = Array.from(sessions.running()).map(model => model.id);
  process.stdout.write(JSON.stringify({
    ok: true,
    session_id: sessionId,
    kernel_id: kernelId,
    before,
    after,
    listed: listed.map(model => ({ id: model.id, path: model.path, kernel: model.kernel && model.kernel.id })),
    statuses,
    new_websockets: sockets.length - socketsBefore,
    left
  }) + '\n');
  sessions.dispose();
  kernelManager.dispose();
}

main().then(() => process.exit(0), error => {
  process.stdout.write(JSON.stringify({ ok: false, error: String(error && error.stack || error) }) + '\n');
  process.exit(1);
});

#!/usr/bin/env node
// Interop scenario: a real @jupyterlab/services 7.x client (the library
// JupyterLab itself uses) against any server speaking Jupyter Server's
// kernel REST API and /api/kernels/<id>/channels WebSocket.
//
//   node scenario.js --base-url http://127.0.0.1:PORT --token TOKEN \
//        --protocol v1|legacy [--kernel-name python3] [--skip a,b] [--verbose]
//
// Each step prints one JSON line on stdout ({"step": ..., "ok": true, ...});
// the last line is {"step": "done", "ok": true}.  The first failure prints
// {"step": ..., "ok": false, "error": ...}, a message on stderr, and exits 1.
// A step named in --skip prints {"step": ..., "ok": true, "skipped": true}.
// Usage errors exit 2.  The library's own console output goes to stderr.
'use strict';

const util = require('node:util');
const WebSocket = require('ws');
const {
  ServerConnection,
  KernelManager,
  KernelSpecManager,
  KernelAPI,
  KernelSpecAPI
} = require('@jupyterlab/services');

const V1_PROTOCOL = 'v1.kernel.websocket.jupyter.org';
const OVERALL_TIMEOUT_MS = 90 * 1000;
const STEP_TIMEOUT_MS = 20 * 1000;
const INTERRUPT_REPLY_TIMEOUT_MS = 10 * 1000;
const BUFFER_SIZE = 64 * 1024;
const COMM_TARGET = 'kernel_relay_echo';

const STEP_NAMES = [
  'kernelspecs',
  'start',
  'kernel_info',
  'execute',
  'stdin',
  'comm_buffer',
  'interrupt',
  'restart',
  'second_client',
  'listing',
  'shutdown'
];
// Without these two the rest makes no sense, or a kernel would be leaked.
const UNSKIPPABLE = new Set(['start', 'shutdown']);

// ---------------------------------------------------------------- output

class StepFailure extends Error {}

function emit(record) {
  process.stdout.write(JSON.stringify(record) + '\n');
}

function fail(message) {
  throw new StepFailure(message);
}

function show(value) {
  const text = JSON.stringify(value);
  return text === undefined ? String(value) : text;
}

function expectEqual(what, expected, got) {
  if (expected !== got) {
    fail(`${what}: expected ${show(expected)}, got ${show(got)}`);
  }
}

function expectTrue(condition, what, got) {
  if (!condition) {
    fail(`${what}; got ${show(got)}`);
  }
}

// Keep stdout for our JSON lines: the library logs with console.log/debug/warn.
function routeLibraryLoggingToStderr(verbose) {
  const toStderr = new console.Console({ stdout: process.stderr, stderr: process.stderr });
  console.log = toStderr.log.bind(toStderr);
  console.info = toStderr.info.bind(toStderr);
  console.warn = toStderr.warn.bind(toStderr);
  console.debug = verbose ? toStderr.debug.bind(toStderr) : () => {};
}

// ---------------------------------------------------------------- options

function usage(message) {
  process.stderr.write(
    `scenario.js: ${message}\n` +
      'usage: node scenario.js --base-url URL --token TOKEN --protocol v1|legacy\n' +
      '       [--kernel-name NAME] [--ws-url WSURL] [--skip STEP[,STEP...]] [--verbose]\n' +
      `steps: ${STEP_NAMES.join(', ')}\n`
  );
  process.exit(2);
}

function parseOptions(argv) {
  let parsed;
  try {
    parsed = util.parseArgs({
      args: argv,
      options: {
        'base-url': { type: 'string' },
        'ws-url': { type: 'string' },
        token: { type: 'string', default: '' },
        protocol: { type: 'string' },
        'kernel-name': { type: 'string', default: 'python3' },
        skip: { type: 'string', multiple: true, default: [] },
        verbose: { type: 'boolean', default: false }
      }
    }).values;
  } catch (error) {
    usage(error.message);
  }
  if (!parsed['base-url']) {
    usage('--base-url is required');
  }
  if (parsed.protocol !== 'v1' && parsed.protocol !== 'legacy') {
    usage(`--protocol must be v1 or legacy, got ${show(parsed.protocol)}`);
  }
  const skip = new Set(parsed.skip.flatMap(s => s.split(',')).filter(Boolean));
  for (const name of skip) {
    if (!STEP_NAMES.includes(name)) {
      usage(`--skip: unknown step ${show(name)}`);
    }
    if (UNSKIPPABLE.has(name)) {
      usage(`--skip: step ${show(name)} cannot be skipped`);
    }
  }
  return {
    baseUrl: parsed['base-url'],
    wsUrl: parsed['ws-url'],
    token: parsed.token,
    protocol: parsed.protocol,
    kernelName: parsed['kernel-name'],
    skip,
    verbose: parsed.verbose
  };
}

// ---------------------------------------------------------------- connection

// A ws WebSocket that remembers every socket the library opens (so the
// scenario can read the negotiated subprotocol without touching private
// fields) and, in legacy mode, never offers any subprotocol, so that the
// server has to fall back to the legacy JSON/binary framing.
function makeWebSocketClass(protocolMode, sockets) {
  return class ScenarioWebSocket extends WebSocket {
    constructor(url, protocols, options) {
      const offered = protocolMode === 'legacy' ? [] : protocols;
      super(url, offered, options);
      const record = { url: String(url), offered: offered || [], socket: this, outcome: 'pending' };
      this.on('open', () => { record.outcome = 'open'; });
      this.on('error', error => { record.outcome = `error: ${error.message}`; });
      sockets.push(record);
    }
  };
}

// Node's fetch, with the reason of a network failure kept in the message
// (the library re-wraps it as a NetworkError, losing error.cause).
function fetchWithCause(request, init) {
  return globalThis.fetch(request, init).catch(error => {
    const cause = error.cause ? ` (${error.cause.code || error.cause.message})` : '';
    throw new TypeError(`${error.message}${cause}: ${request.method || 'GET'} ${request.url || request}`);
  });
}

function makeServerSettings(options, sockets) {
  return ServerConnection.makeSettings({
    baseUrl: options.baseUrl,
    wsUrl: options.wsUrl, // undefined: derived from baseUrl (http -> ws)
    token: options.token, // sent as "Authorization: token ..." on REST calls
    appendToken: true, // and as ?token= on the WebSocket URL (Node's default anyway)
    WebSocket: makeWebSocketClass(options.protocol, sockets),
    fetch: fetchWithCause,
    Request: globalThis.Request,
    Headers: globalThis.Headers
  });
}

function socketsOf(ctx, kernel) {
  return ctx.sockets.filter(
    s => s.url.includes(encodeURIComponent(kernel.id)) &&
      s.url.includes('session_id=' + encodeURIComponent(kernel.clientId))
  );
}

function latestSocketOf(ctx, kernel) {
  const mine = socketsOf(ctx, kernel);
  return mine.length ? mine[mine.length - 1] : undefined;
}

// What each WebSocket attempt offered and how it ended: when the client
// offers a subprotocol and the server selects none, ws fails the handshake
// and the library retries without subprotocols (legacy).
function describeAttempts(records) {
  return records.map(r => ({ offered: r.offered, protocol: r.socket.protocol, outcome: r.outcome }));
}

function urlWithoutToken(url) {
  return url.replace(/([?&]token=)[^&]*/, '$1***');
}

// ---------------------------------------------------------------- waiting

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new StepFailure(`timed out after ${ms} ms waiting for ${what}`)),
      ms
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Resolve with the first value emitted by a lumino signal that satisfies
// `accept`; reject at once if `reject` matches, or after `ms`.
function waitForSignal(signal, { accept, reject, ms, what }) {
  return new Promise((resolve, rejectPromise) => {
    const done = (fn, value) => {
      clearTimeout(timer);
      signal.disconnect(handler);
      fn(value);
    };
    const handler = (_sender, value) => {
      if (accept(value)) {
        done(resolve, value);
      } else if (reject && reject(value)) {
        done(rejectPromise, new StepFailure(`${what}: got ${show(value)}`));
      }
    };
    const timer = setTimeout(
      () => done(rejectPromise, new StepFailure(`timed out after ${ms} ms waiting for ${what}`)),
      ms
    );
    signal.connect(handler);
  });
}

async function waitForConnected(kernel, ms, what) {
  if (kernel.connectionStatus === 'connected') {
    return;
  }
  await waitForSignal(kernel.connectionStatusChanged, {
    accept: status => status === 'connected',
    reject: status => status === 'disconnected',
    ms,
    what: `${what} to reach connection status "connected"`
  });
}

async function waitForStatus(kernel, wanted, ms, what) {
  if (kernel.status === wanted) {
    return;
  }
  await waitForSignal(kernel.statusChanged, {
    accept: status => status === wanted,
    reject: status => status === 'dead',
    ms,
    what: `${what} to reach kernel status ${show(wanted)}`
  });
}

function sleep(ms) {
  return new Promise(resolve => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------- executing

// Send an execute_request; collect what comes back for it.  Returns the
// future at once and `done`, a promise of the collected outcome once the
// execute_reply and the idle status have both arrived.
function startCode(kernel, code, hooks = {}) {
  const future = kernel.requestExecute({ code });
  const outcome = { stdout: '', stderr: '', results: [], errors: [], iopubTypes: [] };
  future.onIOPub = msg => {
    outcome.iopubTypes.push(msg.header.msg_type);
    collectIOPub(outcome, msg);
    if (hooks.onIOPub) {
      hooks.onIOPub(msg);
    }
  };
  if (hooks.onStdin) {
    future.onStdin = msg => hooks.onStdin(msg, future);
  }
  const ms = hooks.timeoutMs || STEP_TIMEOUT_MS;
  const done = withTimeout(future.done, ms, `execute_reply + idle status for ${show(code)}`).then(
    reply => {
      outcome.reply = reply;
      return outcome;
    }
  );
  return { future, done };
}

function runCode(kernel, code, hooks) {
  return startCode(kernel, code, hooks).done;
}

function collectIOPub(outcome, msg) {
  const type = msg.header.msg_type;
  if (type === 'stream') {
    outcome[msg.content.name] = (outcome[msg.content.name] || '') + msg.content.text;
  } else if (type === 'execute_result') {
    outcome.results.push(msg.content.data['text/plain']);
  } else if (type === 'error') {
    outcome.errors.push(`${msg.content.ename}: ${msg.content.evalue}`);
  }
}

function expectOkReply(outcome, code) {
  const content = outcome.reply.content;
  if (content.status !== 'ok') {
    fail(
      `execute_reply for ${show(code)}: expected status "ok", got ${show(content.status)}` +
        ` (${content.ename}: ${content.evalue})`
    );
  }
}

async function evaluate(kernel, code) {
  const outcome = await runCode(kernel, code);
  expectOkReply(outcome, code);
  expectEqual(`number of execute_result messages for ${show(code)}`, 1, outcome.results.length);
  return outcome.results[0];
}

// ---------------------------------------------------------------- steps

async function stepKernelspecs(ctx) {
  const specManager = new KernelSpecManager({ serverSettings: ctx.settings });
  ctx.disposables.push(specManager);
  await withTimeout(specManager.ready, STEP_TIMEOUT_MS, 'GET api/kernelspecs');
  let specs = specManager.specs;
  if (!specs) {
    // The manager swallows the error; ask once more to show what went wrong.
    specs = await new KernelSpecAPI.KernelSpecAPIClient({ serverSettings: ctx.settings }).get();
  }
  expectTrue(typeof specs.default === 'string' && specs.default in specs.kernelspecs,
    'the default spec name must name one of the kernelspecs', specs.default);
  const spec = specs.kernelspecs[ctx.options.kernelName];
  expectTrue(spec, `kernelspec ${show(ctx.options.kernelName)} must exist`,
    Object.keys(specs.kernelspecs));
  expectTrue(typeof spec.display_name === 'string' && spec.display_name !== '',
    'spec.display_name must be a non-empty string', spec.display_name);
  expectTrue(typeof spec.language === 'string' && spec.language !== '',
    'spec.language must be a non-empty string', spec.language);
  ctx.spec = spec;
  return {
    default: specs.default,
    names: Object.keys(specs.kernelspecs),
    kernel_name: spec.name,
    display_name: spec.display_name,
    language: spec.language
  };
}

async function stepStart(ctx) {
  ctx.manager = new KernelManager({ serverSettings: ctx.settings });
  ctx.disposables.push(ctx.manager);
  await withTimeout(ctx.manager.ready, STEP_TIMEOUT_MS, 'KernelManager ready (GET api/kernels)');
  const kernel = await withTimeout(
    ctx.manager.startNew({ name: ctx.options.kernelName }),
    STEP_TIMEOUT_MS,
    'POST api/kernels'
  );
  ctx.kernel = kernel;
  ctx.kernelId = kernel.id;
  await waitForConnected(kernel, STEP_TIMEOUT_MS, 'the kernel WebSocket');
  // The library sends kernel_info_request on connect; its reply marks the
  // connection as usable.
  await withTimeout(kernel.info, STEP_TIMEOUT_MS, 'the kernel_info_reply sent on connect');
  const record = latestSocketOf(ctx, kernel);
  expectTrue(record, 'the library must have opened a WebSocket for this kernel', ctx.sockets.length);
  const expected = ctx.options.protocol === 'v1' ? V1_PROTOCOL : '';
  const attempts = describeAttempts(socketsOf(ctx, kernel));
  if (record.socket.protocol !== expected) {
    fail(`negotiated WebSocket subprotocol (ws.protocol): expected ${show(expected)}, ` +
      `got ${show(record.socket.protocol)}; WebSocket attempts: ${show(attempts)}`);
  }
  return {
    id: kernel.id,
    name: kernel.name,
    client_id: kernel.clientId,
    ws_url: urlWithoutToken(record.url),
    protocol: record.socket.protocol,
    ws_attempts: attempts
  };
}

async function stepKernelInfo(ctx) {
  const reply = await withTimeout(ctx.kernel.requestKernelInfo(), STEP_TIMEOUT_MS,
    'kernel_info_reply');
  expectTrue(reply, 'requestKernelInfo must yield a reply', reply);
  const content = reply.content;
  expectEqual('kernel_info_reply status', 'ok', content.status);
  const language = content.language_info && content.language_info.name;
  expectTrue(typeof language === 'string' && language !== '',
    'kernel_info_reply language_info.name must be a non-empty string', content.language_info);
  return {
    status: content.status,
    language: language,
    protocol_version: content.protocol_version,
    implementation: content.implementation,
    supports_subshells: ctx.kernel.supportsSubshells
  };
}

async function stepExecute(ctx) {
  const code = 'print("hello"); 6*7';
  const outcome = await runCode(ctx.kernel, code);
  expectOkReply(outcome, code);
  expectEqual('stdout stream text', 'hello\n', outcome.stdout);
  expectEqual('execute_result text/plain', '42', outcome.results.join('|'));
  return {
    reply_status: outcome.reply.content.status,
    execution_count: outcome.reply.content.execution_count,
    stdout: outcome.stdout,
    result: outcome.results[0],
    iopub: outcome.iopubTypes
  };
}

async function stepStdin(ctx) {
  const code = 'x = input("name? ")';
  const prompts = [];
  const outcome = await runCode(ctx.kernel, code, {
    onStdin: (msg, future) => {
      if (msg.header.msg_type !== 'input_request') {
        return;
      }
      prompts.push(msg.content.prompt);
      future.sendInputReply({ value: 'relay', status: 'ok' }, msg.header);
    }
  });
  expectOkReply(outcome, code);
  expectEqual('input_request prompts received', '["name? "]', JSON.stringify(prompts));
  const value = await evaluate(ctx.kernel, 'x');
  expectEqual('value of x after the input_reply', "'relay'", value);
  return { prompt: prompts[0], x: value };
}

// Python run in the kernel: a comm target that, once opened, sends a 64 KiB
// buffer of its own (kernel -> client), then sends every comm_msg back with
// its buffers (client -> kernel -> client), telling how many bytes each
// buffer had on arrival.
const ECHO_TARGET_CODE = [
  'def _kernel_relay_echo_target(comm, open_msg):',
  '    def _echo(msg):',
  '        data = dict(msg["content"]["data"])',
  '        data["received_nbytes"] = [memoryview(b).nbytes for b in msg["buffers"]]',
  '        comm.send(data, buffers=msg["buffers"])',
  '    comm.on_msg(_echo)',
  `    comm.send({"tag": "from_kernel"}, buffers=[bytes(range(256)) * ${BUFFER_SIZE / 256}])`,
  `get_ipython().kernel.comm_manager.register_target(${show(COMM_TARGET)}, _kernel_relay_echo_target)`
].join('\n');

function makePattern(size) {
  const bytes = new Uint8Array(size); // own ArrayBuffer: the serializer sends view.buffer
  for (let i = 0; i < size; i++) {
    bytes[i] = i % 256;
  }
  return bytes;
}

function bytesOf(buffer, what) {
  if (buffer instanceof ArrayBuffer) {
    return new Uint8Array(buffer);
  }
  if (ArrayBuffer.isView(buffer)) {
    return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  }
  fail(`${what}: expected a DataView or ArrayBuffer, got ${Object.prototype.toString.call(buffer)}`);
}

function firstMismatch(expected, got) {
  for (let i = 0; i < expected.length; i++) {
    if (expected[i] !== got[i]) {
      return i;
    }
  }
  return -1;
}

// Check that a comm_msg carries exactly one buffer equal to `expected`.
function checkSingleBuffer(what, msg, expected) {
  const buffers = msg.buffers || [];
  expectEqual(`number of buffers in ${what}`, 1, buffers.length);
  const got = bytesOf(buffers[0], `buffer of ${what}`);
  expectEqual(`byteLength of the buffer in ${what}`, expected.length, got.byteLength);
  const at = firstMismatch(expected, got);
  expectTrue(at === -1, `buffer of ${what} differs at byte ${at}: expected ${expected[at]}`, got[at]);
  return Object.prototype.toString.call(buffers[0]);
}

// Comm messages from the kernel, awaitable by their data.tag.
function collectCommMessages(comm) {
  const waiters = new Map();
  const arrived = new Map();
  comm.onMsg = msg => {
    const tag = msg.content.data && msg.content.data.tag;
    arrived.set(tag, msg);
    if (waiters.has(tag)) {
      waiters.get(tag)(msg);
    }
  };
  return tag => arrived.has(tag)
    ? Promise.resolve(arrived.get(tag))
    : new Promise(resolve => waiters.set(tag, resolve));
}

async function stepCommBuffer(ctx) {
  const kernel = ctx.kernel;
  const registration = await runCode(kernel, ECHO_TARGET_CODE);
  expectOkReply(registration, 'register the echo comm target');

  const comm = kernel.createComm(COMM_TARGET);
  if (kernel.supportsSubshells) {
    // JupyterLab's default sends comm traffic over a per-target subshell
    // (create_subshell_request on control); wait for it so the run is
    // deterministic.
    await withTimeout(comm.subshellStarted, STEP_TIMEOUT_MS, 'create_subshell_reply for the comm');
  }
  const commMessage = collectCommMessages(comm);
  const pattern = makePattern(BUFFER_SIZE);

  // The kernel's comm_msg comes before the idle status that ends comm_open.
  const opened = comm.open({}).done;
  const fromKernel = await withTimeout(commMessage('from_kernel'), STEP_TIMEOUT_MS,
    'the comm_msg with a buffer that the kernel sends on open (kernel -> client)');
  await withTimeout(opened, STEP_TIMEOUT_MS, 'idle status after comm_open');
  const fromKernelType = checkSingleBuffer('the kernel\'s comm_msg (kernel -> client)',
    fromKernel, pattern);

  comm.send({ tag: 'echo' }, undefined, [pattern]);
  const echoed = await withTimeout(commMessage('echo'), STEP_TIMEOUT_MS,
    'the echo of our comm_msg with a buffer (client -> kernel -> client)');
  expectEqual('buffer sizes the kernel received (client -> kernel)',
    JSON.stringify([BUFFER_SIZE]), JSON.stringify(echoed.content.data.received_nbytes));
  const echoedType = checkSingleBuffer('the echoed comm_msg (kernel -> client)', echoed, pattern);
  comm.close();
  return {
    comm_id: comm.commId,
    subshell_id: comm.subshellId,
    buffer_bytes: BUFFER_SIZE,
    kernel_to_client_type: fromKernelType,
    kernel_received: echoed.content.data.received_nbytes,
    echoed_type: echoedType
  };
}

async function stepInterrupt(ctx) {
  const kernel = ctx.kernel;
  const code = 'import time; time.sleep(30)';
  let markStarted;
  const started = new Promise(resolve => {
    markStarted = resolve;
  });
  const run = startCode(kernel, code, {
    timeoutMs: STEP_TIMEOUT_MS + INTERRUPT_REPLY_TIMEOUT_MS,
    onIOPub: msg => {
      if (msg.header.msg_type === 'execute_input') {
        markStarted();
      }
    }
  });
  await withTimeout(started, STEP_TIMEOUT_MS, `execute_input for ${show(code)}`);
  await sleep(300); // let the kernel get into time.sleep
  const interruptedAt = Date.now();
  await withTimeout(kernel.interrupt(), STEP_TIMEOUT_MS, 'POST api/kernels/<id>/interrupt');
  const outcome = await withTimeout(run.done, INTERRUPT_REPLY_TIMEOUT_MS,
    'the execute_reply after the interrupt');
  const elapsed = Date.now() - interruptedAt;
  const content = outcome.reply.content;
  expectEqual('execute_reply status after interrupt', 'error', content.status);
  expectEqual('execute_reply ename after interrupt', 'KeyboardInterrupt', content.ename);
  return { reply_status: content.status, ename: content.ename, reply_after_ms: elapsed };
}

async function stepRestart(ctx) {
  const kernel = ctx.kernel;
  const socketsBefore = ctx.sockets.length;
  await withTimeout(kernel.restart(), STEP_TIMEOUT_MS + 10000,
    'POST api/kernels/<id>/restart and the WebSocket reconnect');
  await waitForStatus(kernel, 'idle', STEP_TIMEOUT_MS, 'the restarted kernel');
  const record = latestSocketOf(ctx, kernel);
  const expected = ctx.options.protocol === 'v1' ? V1_PROTOCOL : '';
  expectEqual('subprotocol of the reconnected WebSocket', expected, record.socket.protocol);
  const result = await evaluate(kernel, '1+1');
  expectEqual('result of 1+1 after restart', '2', result);
  const forgotten = await evaluate(kernel, '"x" in globals()');
  expectEqual('x from before the restart still defined', 'False', forgotten);
  return {
    status: kernel.status,
    new_websockets: ctx.sockets.length - socketsBefore,
    protocol: record.socket.protocol,
    result
  };
}

// Record what one connection receives: execute_reply messages on shell and
// the parent msg_ids of the iopub messages.
function watchConnection(kernel) {
  const seen = { executeReplies: [], iopubParents: new Set() };
  kernel.anyMessage.connect((_sender, { msg, direction }) => {
    if (direction !== 'recv') {
      return;
    }
    if (msg.channel === 'shell' && msg.header.msg_type === 'execute_reply') {
      seen.executeReplies.push(msg.parent_header);
    } else if (msg.channel === 'iopub' && msg.parent_header && msg.parent_header.msg_id) {
      seen.iopubParents.add(msg.parent_header.msg_id);
    }
  });
  return seen;
}

function checkReplyRouting(label, seen, ownMsgId, ownClientId) {
  const parents = seen.executeReplies;
  expectEqual(`${label}: number of execute_reply messages received`, 1, parents.length);
  expectEqual(`${label}: execute_reply parent msg_id`, ownMsgId, parents[0].msg_id);
  expectEqual(`${label}: execute_reply parent session`, ownClientId, parents[0].session);
}

async function stepSecondClient(ctx) {
  const a = ctx.kernel;
  const b = ctx.manager.connectTo({ model: { id: a.id, name: a.name } });
  ctx.kernelB = b;
  expectTrue(b.clientId !== a.clientId, 'the second connection must have its own clientId',
    b.clientId);
  await waitForConnected(b, STEP_TIMEOUT_MS, 'the second WebSocket');
  await withTimeout(b.info, STEP_TIMEOUT_MS, 'kernel_info_reply on the second connection');
  const socketB = latestSocketOf(ctx, b);
  const expected = ctx.options.protocol === 'v1' ? V1_PROTOCOL : '';
  expectEqual('subprotocol of the second WebSocket', expected, socketB.socket.protocol);

  const seenA = watchConnection(a);
  const seenB = watchConnection(b);
  const runA = startCode(a, 'import time; time.sleep(0.5); "from A"');
  const runB = startCode(b, '"from B"');
  const [outA, outB] = await Promise.all([runA.done, runB.done]);
  await sleep(500); // give a misrouted reply time to show up
  expectEqual('result seen by connection A', "'from A'", outA.results.join('|'));
  expectEqual('result seen by connection B', "'from B'", outB.results.join('|'));

  const msgIdA = runA.future.msg.header.msg_id;
  const msgIdB = runB.future.msg.header.msg_id;
  checkReplyRouting('connection A', seenA, msgIdA, a.clientId);
  checkReplyRouting('connection B', seenB, msgIdB, b.clientId);
  expectTrue(seenA.iopubParents.has(msgIdB),
    "connection A must see iopub (status at least) of B's execute_request", [...seenA.iopubParents]);
  expectTrue(seenB.iopubParents.has(msgIdA),
    "connection B must see iopub (status at least) of A's execute_request", [...seenB.iopubParents]);
  return {
    client_a: a.clientId,
    client_b: b.clientId,
    execute_replies_a: seenA.executeReplies.length,
    execute_replies_b: seenB.executeReplies.length,
    a_saw_b_iopub: true,
    b_saw_a_iopub: true
  };
}

async function stepListing(ctx) {
  // Direct REST call first: KernelManager's poll swallows HTTP errors.
  const listed = await withTimeout(KernelAPI.listRunning(ctx.settings), STEP_TIMEOUT_MS,
    'GET api/kernels');
  expectTrue(listed.some(m => m.id === ctx.kernelId),
    `GET api/kernels must list kernel ${ctx.kernelId}`, listed.map(m => m.id));
  await withTimeout(ctx.manager.refreshRunning(), STEP_TIMEOUT_MS, 'KernelManager.refreshRunning');
  const models = [...ctx.manager.running()];
  const model = models.find(m => m.id === ctx.kernelId);
  expectTrue(model, `KernelManager.running() must contain kernel ${ctx.kernelId}`,
    models.map(m => m.id));
  expectEqual('model.name', ctx.options.kernelName, model.name);
  expectTrue(typeof model.last_activity === 'string' && !isNaN(Date.parse(model.last_activity)),
    'model.last_activity must be an ISO date string', model.last_activity);
  expectTrue(typeof model.execution_state === 'string' && model.execution_state !== '',
    'model.execution_state must be a non-empty string', model.execution_state);
  expectTrue(typeof model.connections === 'number', 'model.connections must be a number',
    model.connections);
  const single = await withTimeout(KernelAPI.getKernelModel(ctx.kernelId, ctx.settings),
    STEP_TIMEOUT_MS, 'GET api/kernels/<id>');
  expectEqual('GET api/kernels/<id> model id', ctx.kernelId, single && single.id);
  return {
    running: models.length,
    name: model.name,
    last_activity: model.last_activity,
    execution_state: model.execution_state,
    connections: model.connections
  };
}

async function stepShutdown(ctx) {
  if (ctx.kernelB) {
    ctx.kernelB.dispose();
  }
  await withTimeout(ctx.kernel.shutdown(), STEP_TIMEOUT_MS, 'DELETE api/kernels/<id>');
  const ids = (await withTimeout(KernelAPI.listRunning(ctx.settings), STEP_TIMEOUT_MS,
    'GET api/kernels')).map(m => m.id);
  expectTrue(!ids.includes(ctx.kernelId),
    `kernel ${ctx.kernelId} must be gone from GET api/kernels after shutdown`, ids);
  const model = await KernelAPI.getKernelModel(ctx.kernelId, ctx.settings);
  expectEqual('GET api/kernels/<id> after shutdown (undefined means 404)', undefined, model);
  ctx.kernelId = undefined;
  return { running_after: ids.length };
}

const STEPS = {
  kernelspecs: stepKernelspecs,
  start: stepStart,
  kernel_info: stepKernelInfo,
  execute: stepExecute,
  stdin: stepStdin,
  comm_buffer: stepCommBuffer,
  interrupt: stepInterrupt,
  restart: stepRestart,
  second_client: stepSecondClient,
  listing: stepListing,
  shutdown: stepShutdown
};

// ---------------------------------------------------------------- driver

// Best effort: do not leave a kernel behind on the server under test.
async function cleanup(ctx) {
  if (ctx.kernelId) {
    try {
      await withTimeout(KernelAPI.shutdownKernel(ctx.kernelId, ctx.settings), 5000,
        'cleanup shutdown');
    } catch (error) {
      process.stderr.write(`scenario.js: cleanup could not shut down ${ctx.kernelId}: ${error.message}\n`);
    }
  }
  for (const disposable of [ctx.kernelB, ctx.kernel, ...ctx.disposables]) {
    if (disposable && !disposable.isDisposed) {
      disposable.dispose();
    }
  }
}

function describeError(error) {
  if (error instanceof StepFailure) {
    return error.message;
  }
  if (error instanceof ServerConnection.NetworkError) {
    return `network error: ${error.message}`;
  }
  if (error instanceof ServerConnection.ResponseError) {
    return `HTTP ${error.response.status} from ${error.response.url}: ${error.message}`;
  }
  return (error && error.stack) || String(error);
}

async function finish(ctx, code, failedStep, error) {
  if (ctx.finishing) {
    return; // the overall timeout and a failing step may both get here
  }
  ctx.finishing = true;
  if (failedStep) {
    const message = describeError(error);
    emit({ step: failedStep, ok: false, error: message });
    process.stderr.write(`scenario.js: step ${failedStep} failed: ${message}\n`);
  }
  await cleanup(ctx);
  process.exit(code);
}

async function main() {
  const options = parseOptions(process.argv.slice(2));
  routeLibraryLoggingToStderr(options.verbose);
  const ctx = { options, sockets: [], disposables: [], currentStep: 'setup' };
  ctx.settings = makeServerSettings(options, ctx.sockets);

  const overall = setTimeout(() => {
    void finish(ctx, 1, ctx.currentStep,
      new StepFailure(`scenario exceeded its overall timeout of ${OVERALL_TIMEOUT_MS / 1000} s`));
  }, OVERALL_TIMEOUT_MS);
  // A malformed frame makes the library throw from the WebSocket handler.
  process.on('uncaughtException', error => void finish(ctx, 1, ctx.currentStep, error));
  process.on('unhandledRejection', reason => {
    process.stderr.write(`scenario.js: unhandled rejection (ignored): ${describeError(reason)}\n`);
  });

  const startedAt = Date.now();
  const skipped = [];
  for (const name of STEP_NAMES) {
    ctx.currentStep = name;
    if (options.skip.has(name)) {
      skipped.push(name);
      emit({ step: name, ok: true, skipped: true });
      continue;
    }
    const stepStart = Date.now();
    try {
      const details = await STEPS[name](ctx);
      if (ctx.finishing) {
        return;
      }
      emit({ step: name, ok: true, ms: Date.now() - stepStart, ...details });
    } catch (error) {
      clearTimeout(overall);
      await finish(ctx, 1, name, error);
      return;
    }
  }
  clearTimeout(overall);
  emit({ step: 'done', ok: true, ms: Date.now() - startedAt, protocol: options.protocol, skipped });
  await finish(ctx, 0);
}

void main();

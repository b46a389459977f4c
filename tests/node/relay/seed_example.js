// The seed README's example, verbatim, then one request to show the connection works.
// Usage: node seed_example.js <kernel id>
const io = require('socket.io-client');
const shell = io.connect('http://localhost:3000/shell/' + process.argv[2]);
shell.on('msg', (msg) => {
  process.stdout.write(JSON.stringify({ type: msg.header.msg_type, status: msg.content.status }) + '\n');
  shell.disconnect();
  process.exit(0);
});
shell.on('connect', () => {
  shell.emit('msg', { header: { msg_type: 'kernel_info_request' }, content: {} });
});
setTimeout(() => { process.stderr.write('no reply\n'); process.exit(1); }, 30000);

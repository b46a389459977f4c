// Shared by the probe pages: how a socket.io namespace connect from the page turned out.
export function connectOutcome(io, url, transport) {
  return new Promise((resolve) => {
    const socket = io(url, { transports: [transport], reconnection: false, timeout: 8000 });
    socket.on("connect", () => {
      socket.disconnect();
      resolve("connected");
    });
    socket.on("connect_error", (error) => {
      socket.disconnect();
      resolve(`refused:${error.message}`);
    });
  });
}

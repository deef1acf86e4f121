// Loaded with `node --import ./listen-local.mjs`: the gateway's start-server.js listens on
// every interface and takes only a port (`--port=N`); this makes every server it starts
// listen on HOST (default 127.0.0.1) instead, nothing else changes.
import net from "node:net";

const host = process.env.HOST || "127.0.0.1";
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "number" && typeof args[1] !== "string") {
    args.splice(1, 0, host);
  } else if (args[0] && typeof args[0] === "object" && args[0].port !== undefined) {
    args[0] = { ...args[0], host };
  }
  return listen.apply(this, args);
};

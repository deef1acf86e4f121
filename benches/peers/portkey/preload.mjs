// Loaded with `node --import ./preload.mjs` before Portkey's gateway
// (node_modules/@portkey-ai/gateway/build/start-server.js), which benchmarks need to run
// unchanged otherwise:
// * listen on HOST (default 127.0.0.1): start-server.js takes only a port (`--port=N`)
//   and would listen on every interface;
// * give fetch's responses mutable headers: the gateway appends its x-portkey-* headers
//   to the upstream's fetch Response, whose headers Node's fetch makes immutable, and
//   every chat completion then fails with "TypeError: immutable" (Portkey-AI/gateway
//   issues 1389 and 1550; the fix proposed there copies the Response, as this does).
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

const fetch = globalThis.fetch;
globalThis.fetch = async (...args) => {
  const res = await fetch(...args);
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers: res.headers });
};

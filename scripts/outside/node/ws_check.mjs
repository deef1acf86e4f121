// The npm `ws` package against agentd's /ws. Prints one JSON line with what each
// scenario saw; the caller judges it.
//   node ws_check.mjs WS_URL ALLOWED_ORIGIN REFUSED_ORIGIN
import WebSocket from "ws";

const [url, allowedOrigin, refusedOrigin] = process.argv.slice(2);
const LIMIT = 8000;

// Opens a socket (with an Origin header when given), sends each message once open and
// collects text messages until `until(messages)` says so. Records the HTTP status of a
// refused upgrade.
function session(origin, messages, until, { ping = false } = {}) {
  return new Promise((resolve) => {
    const r = { opened: false, upgradeStatus: null, messages: [], pongFrame: false, close: null, error: null };
    const ws = new WebSocket(url, origin ? { origin } : {});
    let finished = false;
    const finish = (why) => {
      if (finished) return;
      finished = true;
      r.why = why;
      clearTimeout(timer);
      try { ws.terminate(); } catch (_) { /* gone */ }
      resolve(r);
    };
    const timer = setTimeout(() => finish("time limit"), LIMIT);
    ws.on("unexpected-response", (_req, res) => {
      r.upgradeStatus = res.statusCode;
      let body = "";
      res.on("data", (c) => { body += c; });
      res.on("end", () => { r.body = body; finish("refused"); });
      res.on("error", () => finish("refused"));
    });
    ws.on("upgrade", (res) => { r.upgradeStatus = res.statusCode; });
    ws.on("open", () => {
      r.opened = true;
      for (const m of messages) ws.send(typeof m === "string" ? m : JSON.stringify(m));
      if (ping) ws.ping(Buffer.from("node-ws"));
      if (until(r)) finish("nothing to wait for");
    });
    ws.on("pong", () => { r.pongFrame = true; if (until(r)) finish("done"); });
    ws.on("message", (data, isBinary) => {
      r.messages.push(isBinary ? { binary: data.length } : data.toString("utf8"));
      if (until(r)) finish("done");
    });
    ws.on("close", (code) => { r.close = code; finish("closed"); });
    ws.on("error", (e) => { r.error = String(e && e.message || e); });
  });
}

// an answer ends with the metrics message, or with an error message
const answered = (r) => r.messages.some((m) => typeof m === "string" && /"type":"(metrics|error)"/.test(m));
const ULID_CHARS = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
function ulid() {
  let ts = Date.now(), time = "";
  for (let i = 0; i < 10; i++) { time = ULID_CHARS[ts % 32] + time; ts = Math.floor(ts / 32); }
  let rnd = "";
  for (let i = 0; i < 16; i++) rnd += ULID_CHARS[Math.floor(Math.random() * 32)];
  return time + rnd;
}

const out = {};
out.flat = await session(allowedOrigin,
  [{ type: "agent-query", prompt: "hi", requestId: "r1" }], answered);
out.nested = await session(allowedOrigin,
  [{ type: "agent-query", query: { id: ulid(), prompt: "hi" }, requestId: "r2" }], answered);
// a JSON ping answered by a JSON pong, and a ping frame answered by a pong frame
out.ping = await session(null, [{ type: "ping" }], (r) => r.pongFrame && r.messages.length >= 1, { ping: true });
out.refused = await session(refusedOrigin, [{ type: "ping" }], (r) => r.messages.length >= 1);
out.noOrigin = await session(null, [{ type: "ping" }], (r) => r.messages.length >= 1);
process.stdout.write(JSON.stringify(out) + "\n");
process.exit(0);

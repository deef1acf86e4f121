// The npm `eventsource` package (the EventSource most Node clients use) on one URL.
// Prints one JSON line of what it saw: every HTTP request it made (with the
// Last-Event-ID it sent and the status it got), every message, every error, and its
// final readyState. Stops when the source is closed, or after MAX_MS.
//   node es_check.mjs URL [MAX_MS]
import { EventSource } from "eventsource";

const [url, maxMsArg] = process.argv.slice(2);
const maxMs = Number(maxMsArg || 8000);
const t0 = Date.now();
const t = () => Date.now() - t0;
const out = { requests: [], messages: [], errors: [], readyState: null, why: null };

const es = new EventSource(url, {
  fetch: async (input, init) => {
    const h = new Headers(init && init.headers);
    const req = { t: t(), lastEventId: h.get("last-event-id"), status: null };
    out.requests.push(req);
    const res = await fetch(input, init);
    req.status = res.status;
    return res;
  },
});

let done = false;
function finish(why) {
  if (done) return;
  done = true;
  out.readyState = es.readyState;
  out.why = why;
  es.close();
  process.stdout.write(JSON.stringify(out) + "\n");
  setTimeout(() => process.exit(0), 50);
}
es.onmessage = (e) => {
  out.messages.push({ t: t(), type: e.type, lastEventId: e.lastEventId, data: e.data });
};
es.onerror = (e) => {
  out.errors.push({ t: t(), code: e.code ?? null, message: e.message ?? null, readyState: es.readyState });
  if (es.readyState === EventSource.CLOSED) finish("closed");
};
setTimeout(() => finish("time limit"), maxMs);

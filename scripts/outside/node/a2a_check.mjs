// The official A2A JavaScript SDK (`@a2a-js/sdk`, A2A 1.0, JSON-RPC binding) against
// agentd's A2A front door: discovery through the agent card, SendStreamingMessage,
// SendMessage, GetTask, CancelTask mid-stream, SubscribeToTask (refused on a finished
// task, and mid-stream on a slow one), a task that fails mid-stream and an unknown task.
//
// usage: node a2a_check.mjs BASE_URL PROMPT ERROR_PROMPT|- SLOW_PROMPT|- API_KEY|- [LIVE_PROMPT|-]
// Prints one JSON line: {card, stream, send, get, resubscribe, resubscribeLive, notFound,
// cancel, error}; cancel is null when SLOW_PROMPT is "-", error when ERROR_PROMPT is
// "-", resubscribeLive when LIVE_PROMPT is "-" or absent. LIVE_PROMPT must stream a few
// chunks and then complete: resubscribeTask is called on its task once three chunks
// have come, while the original stream goes on. Each says what the client saw (texts,
// states as TaskState names, error class names and messages), or {crash} when the
// client threw where it should not have.
import { ClientFactory, ClientFactoryOptions, JsonRpcTransportFactory } from "@a2a-js/sdk/client";
import { Role, TaskState } from "@a2a-js/sdk";
import { randomUUID } from "node:crypto";

const [base, prompt, errorPrompt, slowPrompt, apiKey, livePrompt] = process.argv.slice(2);
const given = (v) => v && v !== "-";

// With a key, every request carries it as the bearer token (how the card's
// securitySchemes say to send it).
const authFetch = (input, init = {}) => {
  const headers = new Headers(init.headers || {});
  headers.set("authorization", `Bearer ${apiKey}`);
  return fetch(input, { ...init, headers });
};
const factory = given(apiKey)
  ? new ClientFactory(
      ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
        transports: [new JsonRpcTransportFactory({ fetchImpl: authFetch })],
      }),
    )
  : new ClientFactory();

const message = (text) => ({
  message: {
    messageId: randomUUID(),
    role: Role.ROLE_USER,
    parts: [{ content: { $case: "text", value: text } }],
  },
});
const stateName = (s) => (s === undefined || s === null ? null : TaskState[s] ?? String(s));
const partsText = (parts) =>
  (parts || []).map((p) => (p.content && p.content.$case === "text" ? p.content.value : "")).join("");
const failure = (e) => ({ error: e && e.constructor ? e.constructor.name : typeof e, message: e && e.message ? e.message : String(e) });

// Reads a stream of StreamResponses; `onTask` runs once, on the first task; `onChunk`
// after each chunk of the answer artifact (not awaited: the stream is read on).
// `snapshotText` and `snapshotState` are the first task's: its answer artifact's text
// and its state (a resubscription's snapshot).
async function readStream(gen, onTask, onChunk) {
  const seen = {
    kinds: [], text: "", artifactUpdates: 0, lastChunk: false, taskId: null, state: null, statusMessage: "",
    snapshotText: null, snapshotState: null,
  };
  for await (const r of gen) {
    const p = r.payload;
    if (!p) continue;
    seen.kinds.push(p.$case);
    if (p.$case === "task") {
      seen.taskId = seen.taskId || p.value.id;
      seen.state = stateName(p.value.status?.state);
      if (seen.kinds.length === 1) {
        const answer = (p.value.artifacts || []).find((a) => a.artifactId === "answer");
        seen.snapshotText = partsText(answer?.parts);
        seen.snapshotState = seen.state;
        if (onTask) await onTask(p.value);
      }
    } else if (p.$case === "artifactUpdate") {
      if (p.value.artifact?.artifactId === "answer") {
        seen.text += partsText(p.value.artifact.parts);
        seen.artifactUpdates += 1;
        if (p.value.lastChunk) seen.lastChunk = true;
        if (onChunk) onChunk(seen);
      }
    } else if (p.$case === "statusUpdate") {
      seen.state = stateName(p.value.status?.state);
      seen.statusMessage = partsText(p.value.status?.message?.parts);
    }
  }
  return seen;
}

async function guarded(fn) {
  try {
    return await fn();
  } catch (e) {
    return { crash: `${failure(e).error}: ${failure(e).message}` };
  }
}

const out = {};
let client;
try {
  client = await factory.createFromUrl(base);
  const card = await client.getAgentCard();
  out.card = {
    name: card.name,
    streaming: card.capabilities?.streaming ?? null,
    interfaces: (card.supportedInterfaces || []).map((i) => ({ url: i.url, binding: i.protocolBinding, version: i.protocolVersion })),
    protocolVersion: client.protocolVersion,
  };
} catch (e) {
  console.log(JSON.stringify({ crash: `discovery: ${failure(e).error}: ${failure(e).message}` }));
  process.exit(0);
}

out.stream = await guarded(() => readStream(client.sendMessageStream(message(prompt))));

out.send = await guarded(async () => {
  const r = await client.sendMessage(message(prompt));
  if (!r || !r.status) return { kind: "message", text: partsText(r?.parts) };
  const answer = (r.artifacts || []).find((a) => a.artifactId === "answer");
  return { kind: "task", id: r.id, contextId: r.contextId, state: stateName(r.status.state), text: partsText(answer?.parts) };
});

out.get = await guarded(async () => {
  const t = await client.getTask({ id: out.send.id });
  const answer = (t.artifacts || []).find((a) => a.artifactId === "answer");
  return { id: t.id, contextId: t.contextId, state: stateName(t.status?.state), text: partsText(answer?.parts) };
});

// A task that has ended has nothing to subscribe to: SubscribeToTask is refused with
// UnsupportedOperation (-32004), which the client must surface as its typed error.
out.resubscribe = await guarded(async () => {
  try {
    const got = [];
    for await (const r of client.resubscribeTask({ id: out.send.id })) got.push(r.payload?.$case);
    return { events: got };
  } catch (e) {
    return failure(e);
  }
});

// Mid-stream: once the original stream has had three chunks, resubscribeTask on its
// task, read to its end while the original stream is read on. The subscription must
// give the task as it is (working, the text so far), then the updates from there on,
// then the final status: snapshot + chunks = what the original stream got.
out.resubscribeLive = !given(livePrompt)
  ? null
  : await guarded(async () => {
      let subscribed = null;
      const original = await readStream(client.sendMessageStream(message(livePrompt)), null, (seen) => {
        if (subscribed === null && seen.artifactUpdates === 3) {
          subscribed = readStream(client.resubscribeTask({ id: seen.taskId })).catch((e) => failure(e));
        }
      });
      return { original, subscribed: subscribed === null ? null : await subscribed };
    });

out.notFound = await guarded(async () => {
  try {
    const t = await client.getTask({ id: "no-such-task" });
    return { task: t.id };
  } catch (e) {
    return failure(e);
  }
});

out.cancel = !given(slowPrompt)
  ? null
  : await guarded(async () => {
      let canceled = null;
      const seen = await readStream(client.sendMessageStream(message(slowPrompt)), async (task) => {
        // Cancel while the answer streams: the agent is dropped, the stream ends canceled.
        const t = await client.cancelTask({ id: task.id });
        canceled = stateName(t.status?.state);
      });
      let got = null;
      try {
        got = stateName((await client.getTask({ id: seen.taskId })).status?.state);
      } catch (e) {
        got = failure(e);
      }
      let again = null;
      try {
        await client.cancelTask({ id: seen.taskId });
        again = { error: null };
      } catch (e) {
        again = failure(e);
      }
      return { ...seen, canceled, get: got, cancelAgain: again };
    });

out.error = !given(errorPrompt)
  ? null
  : await guarded(async () => {
      const streamed = await readStream(client.sendMessageStream(message(errorPrompt)));
      const r = await client.sendMessage(message(errorPrompt));
      return { streamed, sendState: stateName(r?.status?.state), sendMessage: partsText(r?.status?.message?.parts) };
    });

console.log(JSON.stringify(out));

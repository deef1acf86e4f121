// The official A2A JavaScript SDK (`@a2a-js/sdk`, A2A 1.0, JSON-RPC binding) against
// agentd's A2A front door: discovery through the agent card, SendStreamingMessage,
// SendMessage, GetTask, CancelTask mid-stream, SubscribeToTask, a task that fails
// mid-stream and an unknown task.
//
// usage: node a2a_check.mjs BASE_URL PROMPT ERROR_PROMPT|- SLOW_PROMPT|- API_KEY|-
// Prints one JSON line: {card, stream, send, get, resubscribe, notFound, cancel, error};
// cancel is null when SLOW_PROMPT is "-", error when ERROR_PROMPT is "-". Each says
// what the client saw (texts, states as TaskState names, error class names and
// messages), or {crash} when the client threw where it should not have.
import { ClientFactory, ClientFactoryOptions, JsonRpcTransportFactory } from "@a2a-js/sdk/client";
import { Role, TaskState } from "@a2a-js/sdk";
import { randomUUID } from "node:crypto";

const [base, prompt, errorPrompt, slowPrompt, apiKey] = process.argv.slice(2);
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

// Reads a stream of StreamResponses; `onTask` runs once, on the first task.
async function readStream(gen, onTask) {
  const seen = { kinds: [], text: "", artifactUpdates: 0, lastChunk: false, taskId: null, state: null, statusMessage: "" };
  for await (const r of gen) {
    const p = r.payload;
    if (!p) continue;
    seen.kinds.push(p.$case);
    if (p.$case === "task") {
      seen.taskId = seen.taskId || p.value.id;
      seen.state = stateName(p.value.status?.state);
      if (onTask && seen.kinds.length === 1) await onTask(p.value);
    } else if (p.$case === "artifactUpdate") {
      if (p.value.artifact?.artifactId === "answer") {
        seen.text += partsText(p.value.artifact.parts);
        seen.artifactUpdates += 1;
        if (p.value.lastChunk) seen.lastChunk = true;
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

// agentd keeps no per-task event log to replay: SubscribeToTask is refused with
// UnsupportedOperation (-32004). The client must surface that as its typed error.
out.resubscribe = await guarded(async () => {
  try {
    const got = [];
    for await (const r of client.resubscribeTask({ id: out.send.id })) got.push(r.payload?.$case);
    return { events: got };
  } catch (e) {
    return failure(e);
  }
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

// The playground's script: sends the prompt to the chosen route, reads the SSE answer
// with fetch (a ReadableStream), appends text as it arrives, and lists every other
// event. Served from this origin so that the page works under agentd's CSP.
"use strict";

const $ = (id) => document.getElementById(id);

function ulid() {
  const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  let time = Date.now(), out = "";
  for (let i = 0; i < 10; i++) { out = alphabet[time % 32] + out; time = Math.floor(time / 32); }
  const random = crypto.getRandomValues(new Uint8Array(16));
  for (let i = 0; i < 16; i++) out += alphabet[random[i] % 32];
  return out;
}

function note(kind, text) {
  const line = document.createElement("div");
  if (kind === "error") line.className = "error";
  line.textContent = text;
  $("events").appendChild(line);
}

// One SSE event (its name and data lines) → what the page shows.
function show(route, name, data) {
  if (route === "/v1/chat/completions") {
    if (data === "[DONE]") { note("done", "[DONE]"); return; }
    const chunk = JSON.parse(data);
    if (chunk.error) { note("error", "error: " + JSON.stringify(chunk.error)); return; }
    for (const choice of chunk.choices || []) {
      if (choice.delta && choice.delta.content) $("answer").textContent += choice.delta.content;
      if (choice.finish_reason) note("done", "finish_reason: " + choice.finish_reason);
    }
    for (const ev of chunk.sentient_events || []) note("event", JSON.stringify(ev));
    return;
  }
  const ev = JSON.parse(data);
  if (ev.content_type === "chunked.text") {
    if (!ev.is_complete) $("answer").textContent += ev.content;
  } else if (ev.content_type === "atomic.error") {
    note("error", (ev.event_name || name) + ": " + JSON.stringify(ev.content));
  } else {
    note("event", (ev.event_name || name) + " " + ev.content_type + ": " + JSON.stringify(ev.content ?? null));
  }
}

async function ask(event) {
  event.preventDefault();
  const prompt = $("prompt").value, route = $("route").value, token = $("token").value.trim();
  $("answer").textContent = ""; $("events").textContent = "";
  for (const id of ["request-id", "status", "first", "total"]) $(id).textContent = "…";
  $("send").disabled = true;
  const headers = { "accept": "text/event-stream" };
  if (token) headers["authorization"] = "Bearer " + token;
  let url = route, init = { method: "POST", headers };
  if (route === "/stream") {
    url = "/stream?prompt=" + encodeURIComponent(prompt);
    init = { method: "GET", headers };
  } else if (route === "/agent") {
    headers["content-type"] = "application/json";
    init.body = JSON.stringify({ query: { id: ulid(), prompt } });
  } else {
    headers["content-type"] = "application/json";
    init.body = JSON.stringify({ model: "agent", stream: true, messages: [{ role: "user", content: prompt }] });
  }
  const started = performance.now();
  let first = null;
  try {
    const res = await fetch(url, init);
    $("request-id").textContent = res.headers.get("x-request-id") || "–";
    $("status").textContent = String(res.status);
    if (!res.ok || !res.body) {
      note("error", "HTTP " + res.status + ": " + (await res.text()));
      return;
    }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message", data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (!data.length) continue;
        if (first === null) { first = performance.now() - started; $("first").textContent = first.toFixed(1); }
        show(route, name, data.join("\n"));
      }
    }
  } catch (e) {
    note("error", String(e));
  } finally {
    $("total").textContent = (performance.now() - started).toFixed(1);
    $("send").disabled = false;
    document.body.dataset.finished = String(Date.now());
  }
}

$("ask").addEventListener("submit", ask);
window.playgroundReady = true;

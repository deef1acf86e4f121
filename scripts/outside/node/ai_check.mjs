// The `ai` package (Vercel AI SDK) with its OpenAI-compatible provider against agentd's
// /v1/chat/completions: streamText (through fullStream), generateText, a conversation
// with history, and a prompt whose answer fails mid-stream.
//
// usage: node ai_check.mjs BASE_URL PROMPT ERROR_PROMPT|- API_KEY|-
// Prints one JSON line: {stream, generate, history, error} (error is null when
// ERROR_PROMPT is "-"); each says what the client saw (text, finish reason, usage,
// errors) or {crash} when the client threw outside its own error reporting.
import { generateText, streamText } from "ai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";

const [base, prompt, errorPrompt, apiKey] = process.argv.slice(2);
const provider = createOpenAICompatible({
  name: "agentd",
  baseURL: `${base}/v1`,
  apiKey: apiKey && apiKey !== "-" ? apiKey : "unused",
  includeUsage: true,
});
const model = provider.chatModel("agentd");

const message = (e) => (e && e.message ? e.message : JSON.stringify(e));

async function stream(args) {
  const seen = { text: "", deltas: 0, finishReason: null, usage: null, errors: [] };
  try {
    const result = streamText({ model, maxRetries: 0, onError: () => {}, ...args });
    for await (const part of result.fullStream) {
      if (part.type === "text-delta") {
        seen.text += part.text;
        seen.deltas += 1;
      } else if (part.type === "finish") {
        seen.finishReason = part.finishReason;
        seen.usage = part.totalUsage;
      } else if (part.type === "error") {
        seen.errors.push(message(part.error));
      }
    }
  } catch (e) {
    seen.crash = message(e);
  }
  return seen;
}

async function generate(args) {
  try {
    const r = await generateText({ model, maxRetries: 0, ...args });
    return { text: r.text, finishReason: r.finishReason, usage: r.usage };
  } catch (e) {
    return { crash: message(e) };
  }
}

const out = {
  stream: await stream({ prompt }),
  generate: await generate({ prompt }),
  history: await stream({
    messages: [
      { role: "system", content: "Answer briefly." },
      { role: "user", content: "An earlier question" },
      { role: "assistant", content: "An earlier answer" },
      { role: "user", content: prompt },
    ],
  }),
  error: errorPrompt && errorPrompt !== "-" ? await stream({ prompt: errorPrompt }) : null,
};
console.log(JSON.stringify(out));

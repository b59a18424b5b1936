// The official openai SDK for Node.js as a gateway caller. Prints one JSON object on stdout.
// Env: KIMI_BASE_URL, KIMI_API_KEY, KIMI_MODEL, KIMI_MESSAGES (JSON array).
// Mode (argv[2]): "chat" = one plain and one streaming completion; "limit" = KIMI_CALLS plain calls,
// each outcome reported (answer, or the SDK's error class with Kimi's error type).
import OpenAI from "openai";

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`client.mjs: set ${name} in the environment`);
    process.exit(2);
  }
  return value;
};

const client = new OpenAI({
  apiKey: env("KIMI_API_KEY"),
  baseURL: env("KIMI_BASE_URL"),
  maxRetries: 0, // a 429 must reach the test, not be retried away
  timeout: 15_000,
});
const model = env("KIMI_MODEL");
const messages = JSON.parse(env("KIMI_MESSAGES"));

async function chat() {
  const reply = await client.chat.completions.create({ model, messages });
  const stream = await client.chat.completions.create({
    model, messages, stream: true, stream_options: { include_usage: true },
  });
  const pieces = [];
  let choiceUsage = null; // Kimi puts usage inside the final choice's chunk
  let trailerUsage = null; // OpenAI's include_usage trailer, if the server sends one
  let chunks = 0;
  let finish = null;
  for await (const chunk of stream) {
    chunks += 1;
    const choice = chunk.choices?.[0];
    if (choice) {
      pieces.push(choice.delta?.content ?? "");
      if (choice.usage) choiceUsage = choice.usage;
      if (choice.finish_reason) finish = choice.finish_reason;
    }
    if (chunk.usage) trailerUsage = chunk.usage;
  }
  return {
    plain: { content: reply.choices[0].message.content, usage: reply.usage, finish: reply.choices[0].finish_reason },
    stream: { content: pieces.join(""), usage: choiceUsage ?? trailerUsage, choiceUsage, trailerUsage, chunks, finish },
  };
}

async function limit() {
  const calls = Number(process.env.KIMI_CALLS ?? "2");
  const outcomes = [];
  for (let i = 0; i < Math.min(calls, 20); i++) {
    try {
      const reply = await client.chat.completions.create({ model, messages });
      outcomes.push({ ok: true, content: reply.choices[0].message.content });
    } catch (err) {
      if (!(err instanceof OpenAI.APIError)) throw err;
      outcomes.push({
        ok: false,
        sdkClass: err.constructor.name,
        isRateLimitError: err instanceof OpenAI.RateLimitError,
        status: err.status,
        type: err.type ?? err.error?.type ?? null,
        message: err.error?.message ?? err.message,
        retryAfter: err.headers?.get?.("retry-after") ?? null,
      });
    }
  }
  return { outcomes };
}

const modes = { chat, limit };
const mode = process.argv[2];
if (!(mode in modes)) {
  console.error(`client.mjs: mode must be one of ${Object.keys(modes).join(", ")}, got ${mode}`);
  process.exit(2);
}
console.log(JSON.stringify(await modes[mode]()));

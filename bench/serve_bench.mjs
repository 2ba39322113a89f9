// Serving benchmark: N concurrent streaming clients against a running `deepmoe serve`, on loopback only, a fixed
// number of requests per level. One JSON line per concurrency level: requests/s, output tokens/s, and TTFT / TPOT
// p50 and p99 (TTFT: request sent → first content chunk; TPOT: (last chunk − first chunk) / (tokens − 1)).
//
//   node bench/serve_bench.mjs --url http://127.0.0.1:8080 --concurrency 1,8,32,100 --requests 100 \
//        --max-tokens 32 --prompt-words 64
//
// --waves W instead sends each level as W waves of exactly `concurrency` requests submitted together, each prompt
// --prompt-tokens N token ids of its own (seeded, below --vocab, no shared prefix): the workload of `deepmoe bench
// DIR --concurrency C --serving-prompt N --shared-prefix 0 --decode-steps M`, whose output tok/s is the engine's
// own figure at that concurrency. Their ratio is what the HTTP layer costs (docs/SERVER.md).
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({ options: {
  url: { type: 'string', default: 'http://127.0.0.1:8080' },
  concurrency: { type: 'string', default: '1,8,32,100' },
  requests: { type: 'string', default: '100' },
  'max-tokens': { type: 'string', default: '32' },
  'prompt-words': { type: 'string', default: '64' },
  'prompt-tokens': { type: 'string' },
  vocab: { type: 'string', default: '1000' },
  waves: { type: 'string' },
} });
const url = new URL(opt.url);
if (!['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname)) throw new Error('loopback addresses only');
const maxTokens = Number(opt['max-tokens']);
const model = (await (await fetch(opt.url + '/v1/models')).json()).data[0].id;
const words = 'the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing'.split(' ');
// Token-id prompts: a small linear congruential generator per request, ids in [3, vocab).
const promptTokens = (i) => {
  let x = BigInt(i + 1) * 0x9E3779B97F4A7C15n & 0xFFFFFFFFFFFFFFFFn;
  return Array.from({ length: Number(opt['prompt-tokens']) }, () => {
    x = (x * 6364136223846793005n + 1442695040888963407n) & 0xFFFFFFFFFFFFFFFFn;
    return 3 + Number((x >> 33n) % BigInt(Number(opt.vocab) - 3));
  });
};
const prompt = (i) => opt['prompt-tokens'] ? promptTokens(i) : Array.from({ length: Number(opt['prompt-words']) }, (_, k) => words[(i * 7 + k) % words.length]).join(' ');

async function one(i) {
  const sent = performance.now();
  const r = await fetch(opt.url + '/v1/completions', { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model, prompt: prompt(i), max_tokens: maxTokens, ignore_eos: true, temperature: 0,
      stream: true, stream_options: { include_usage: true } }) });
  if (r.status !== 200) throw new Error(`HTTP ${r.status}`);
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '', first = null, last = null, tokens = 0, done = false;
  while (!done) {
    const { value, done: end } = await reader.read();
    if (end) break;
    buffer += decoder.decode(value, { stream: true });
    let k;
    while ((k = buffer.indexOf('\n\n')) >= 0) {
      const line = buffer.slice(0, k);
      buffer = buffer.slice(k + 2);
      if (!line.startsWith('data: ')) continue;
      if (line === 'data: [DONE]') { done = true; break; }
      const chunk = JSON.parse(line.slice(6));
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
      if (chunk.choices.length && chunk.choices[0].text) {
        last = performance.now();
        if (first === null) first = last;
      }
    }
  }
  if (!done) throw new Error('stream ended without [DONE]');
  return { ttft: (first - sent) / 1000, tpot: tokens > 1 ? (last - first) / 1000 / (tokens - 1) : null, tokens };
}

const pct = (xs, p) => {
  const s = xs.filter((x) => x !== null).sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : null;
};

let salt = 0;
for (const concurrency of opt.concurrency.split(',').map(Number)) {
  const waves = opt.waves ? Number(opt.waves) : 0;
  const total = waves ? waves * concurrency : Number(opt.requests);
  let next = 0;
  const results = [];
  let failures = 0;
  const start = performance.now();
  const attempt = async (i) => { try { results.push(await one(i)); } catch { failures++; } };
  if (waves) {
    for (let w = 0; w < waves; ++w)
      await Promise.all(Array.from({ length: concurrency }, () => attempt(salt++)));
  } else {
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (next < total) await attempt(next++);
    }));
  }
  const seconds = (performance.now() - start) / 1000;
  const tokens = results.reduce((s, r) => s + r.tokens, 0);
  console.log(JSON.stringify({ concurrency, requests: total, failures, seconds: +seconds.toFixed(3),
    requests_per_s: +(results.length / seconds).toFixed(3), output_tokens_per_s: +(tokens / seconds).toFixed(2),
    ttft_p50_s: pct(results.map((r) => r.ttft), 0.5), ttft_p99_s: pct(results.map((r) => r.ttft), 0.99),
    tpot_p50_s: pct(results.map((r) => r.tpot), 0.5), tpot_p99_s: pct(results.map((r) => r.tpot), 0.99) }));
}

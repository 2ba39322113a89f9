// `deepmoe serve --speculative mtp`: the same greedy replies as a server without it — text, finish_reason and
// logprobs — for chat and completion requests sent together (so they share the speculative server's batches,
// with stop strings, streaming and n > 1 among them), on the trained default model (whose MTP module gets drafts
// accepted) and on the tiny random one; /metrics reports the drafts proposed and accepted.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { MODEL, metrics, startServer, waitForMetrics } from './server.mjs';

const DEFAULT_MODEL = process.env.DEEPMOE_DEFAULT_MODEL;
if (!DEFAULT_MODEL) throw new Error('DEEPMOE_DEFAULT_MODEL must be set (ctest sets it)');

const servers = [];
after(async () => {
  for (const s of servers) {
    const status = await s.stop('SIGTERM');
    assert.deepEqual(status, { code: 0, signal: null }, s.log());
  }
});

const starts = ['Once upon a time', 'The little dog', 'One day, a girl named Lily', 'Tom and his mom went to',
  'The sun was', 'In the park there was', 'She looked at the', 'He wanted to'];

// 24 greedy requests of every kind the server takes, as [kind, body].
function requests(model) {
  const out = [];
  for (let i = 0; i < 24; ++i) {
    const text = starts[i % starts.length] + (i >= 8 ? ` ${i}` : '');
    const common = { model, max_tokens: 6 + (i % 5) * 6, temperature: 0 };
    if (i % 6 === 5) common.stop = [' the', '.'];
    if (i % 3 === 0) {
      out.push(['chat', { ...common, messages: [{ role: 'user', content: text }], logprobs: i % 2 === 0, top_logprobs: i % 2 === 0 ? 2 : undefined }]);
    } else if (i % 3 === 1) {
      out.push(['completion', { ...common, prompt: text, logprobs: 2, n: i % 4 === 1 ? 2 : 1 }]);
    } else {
      out.push(['stream', { ...common, prompt: text }]);
    }
  }
  return out;
}

async function ask(client, [kind, body]) {
  if (kind === 'chat') {
    const r = await client.chat.completions.create(body);
    return r.choices.map((c) => ({ text: c.message.content, finish: c.finish_reason, logprobs: c.logprobs }));
  }
  if (kind === 'completion') {
    const r = await client.completions.create(body);
    return r.choices.map((c) => ({ text: c.text, finish: c.finish_reason, logprobs: c.logprobs }));
  }
  const stream = await client.completions.create({ ...body, stream: true });
  let text = '';
  let finish = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.text ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  return [{ text, finish }];
}

async function compare(model, modelId, extra) {
  const plain = await startServer(['-t', '1', '--max-running', '8'], model);
  servers.push(plain);
  const spec = await startServer(['-t', '1', '--max-running', '8', '--speculative', 'mtp', ...extra], model);
  servers.push(spec);
  assert.match(spec.log(), /MTP speculative decoding/);
  const clients = [plain, spec].map((s) => new OpenAI({ baseURL: s.url + '/v1', apiKey: 'none', maxRetries: 0, timeout: 120000 }));
  const reqs = requests(modelId);
  const [a, b] = await Promise.all(clients.map((c) => Promise.all(reqs.map((r) => ask(c, r)))));
  let stopped = 0;
  for (let i = 0; i < reqs.length; ++i) {
    assert.deepEqual(b[i], a[i], `request ${i} (${reqs[i][0]})`);
    stopped += a[i].some((c) => c.finish === 'stop');
  }
  const m = await metrics(spec.url);
  assert.ok(m.deepmoe_speculative_draft_tokens_total > 0, JSON.stringify(m));
  assert.ok(m.deepmoe_speculative_verify_steps_total > 0);
  const rate = m.deepmoe_speculative_accepted_tokens_total / m.deepmoe_speculative_draft_tokens_total;
  assert.ok(Math.abs(m.deepmoe_speculative_acceptance_rate - rate) < 1e-6);
  assert.ok(Math.abs(m.deepmoe_speculative_accepted_tokens_per_step -
    m.deepmoe_speculative_accepted_tokens_total / m.deepmoe_speculative_verify_steps_total) < 1e-6);
  assert.equal((await metrics(plain.url)).deepmoe_speculative_draft_tokens_total, undefined);
  // Both caches give every block back once the requests are done.
  const after = await waitForMetrics(spec.url, (x) => x.deepmoe_num_requests_running === 0 && x.deepmoe_kv_blocks_used === 0);
  assert.equal(after.deepmoe_kv_mtp_blocks_used, 0, 'every MTP KV block is back in the pool');
  return { m, stopped };
}

test('trained default model: greedy replies equal a server without speculation', async () => {
  const id = DEFAULT_MODEL.replace(/\/+$/, '').split('/').pop();
  const { m, stopped } = await compare(DEFAULT_MODEL, id, ['--draft-tokens', '3']);
  assert.ok(m.deepmoe_speculative_accepted_tokens_total > 0, 'the trained MTP module should get drafts accepted');
  assert.ok(stopped > 0, 'some replies should end on a stop string or EOS');
});

test('tiny random model: greedy replies equal a server without speculation', async () => {
  const id = MODEL.replace(/\/+$/, '').split('/').pop();
  await compare(MODEL, id, []);
});

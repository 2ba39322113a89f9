// The official `openai` npm package drives `deepmoe serve` unchanged: chat (plain and streamed), completions
// (string, list, token ids, echo), logprobs (against `deepmoe generate --logprobs`, an independent path), seed
// determinism, stop strings, usage with cached tokens on a repeated prefix, n > 1, models, and error objects.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { BIN, MODEL, MODEL_ID, startServer } from './server.mjs';

const KEY = 'sk-test-' + 'a1b2c3d4e5f6';
let server;
let client;

before(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'deepmoe-key-'));
  writeFileSync(join(dir, 'key'), KEY + '\n');
  server = await startServer(['--api-key-file', join(dir, 'key')]);
  client = new OpenAI({ baseURL: server.url + '/v1', apiKey: KEY, maxRetries: 0, timeout: 60000 });
});

after(async () => {
  const status = await server.stop('SIGTERM');
  assert.deepEqual(status, { code: 0, signal: null }, server.log());
  assert.ok(!server.log().includes(KEY), 'the API key must never be logged');
});

const hello = [{ role: 'user', content: 'Hello, who are you?' }];

test('GET /v1/models lists the served model', async () => {
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), [MODEL_ID]);
  const one = await client.models.retrieve(MODEL_ID);
  assert.equal(one.id, MODEL_ID);
});

test('chat completion: shape, finish_reason length, usage', async () => {
  const r = await client.chat.completions.create({ model: MODEL_ID, messages: hello, max_tokens: 8, ignore_eos: true, seed: 1 });
  assert.equal(r.object, 'chat.completion');
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.model, MODEL_ID);
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(r.choices[0].message.content.length > 0);
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 8);
  assert.ok(r.usage.prompt_tokens > 5);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + 8);
});

test('streamed chat equals the plain one for the same seed; include_usage', async () => {
  const params = { model: MODEL_ID, messages: hello, max_tokens: 12, temperature: 0.9, seed: 42, ignore_eos: true };
  const plain = await client.chat.completions.create(params);
  const stream = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let finish = null;
  let usage = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) {
      assert.deepEqual(chunk.choices, []);
      usage = chunk.usage;
      continue;
    }
    assert.equal(chunk.usage, null);
    text += chunk.choices[0].delta.content ?? '';
    if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
  }
  assert.ok(chunks > 3);
  assert.equal(text, plain.choices[0].message.content);
  assert.equal(finish, 'length');
  assert.equal(usage.completion_tokens, 12);
  assert.equal(usage.prompt_tokens, plain.usage.prompt_tokens);
});

test('seed determinism: same seed same text, another seed another text', async () => {
  const params = { model: MODEL_ID, messages: hello, max_tokens: 16, temperature: 1.0, ignore_eos: true };
  const a = await client.chat.completions.create({ ...params, seed: 7 });
  const b = await client.chat.completions.create({ ...params, seed: 7 });
  const c = await client.chat.completions.create({ ...params, seed: 8 });
  assert.equal(a.choices[0].message.content, b.choices[0].message.content);
  assert.notEqual(a.choices[0].message.content, c.choices[0].message.content);
});

test('n = 3 gives three indexed choices, reproducible per seed', async () => {
  const params = { model: MODEL_ID, messages: hello, max_tokens: 6, temperature: 1.0, n: 3, seed: 5, ignore_eos: true };
  const a = await client.chat.completions.create(params);
  const b = await client.chat.completions.create(params);
  assert.deepEqual(a.choices.map((c) => c.index), [0, 1, 2]);
  assert.deepEqual(a.choices.map((c) => c.message.content), b.choices.map((c) => c.message.content));
  assert.equal(a.usage.completion_tokens, 18);
});

test('stop string: the text ends right before it, finish_reason stop', async () => {
  const params = { model: MODEL_ID, prompt: 'The quick brown fox', max_tokens: 24, temperature: 0, ignore_eos: true };
  const full = (await client.completions.create(params)).choices[0].text;
  // A stop string taken from the middle of the greedy output.
  const at = Math.floor(full.length / 2);
  const stop = full.slice(at, at + 3);
  assert.equal(stop.length, 3, full);
  const cut = await client.completions.create({ ...params, stop: [stop, 'never-appears'] });
  assert.equal(cut.choices[0].text, full.slice(0, full.indexOf(stop)));
  assert.equal(cut.choices[0].finish_reason, 'stop');
});

test('usage: a repeated prompt is served from the KV cache (cached_tokens)', async () => {
  const messages = [{ role: 'system', content: 'You are a careful assistant who answers briefly.' },
    { role: 'user', content: 'List three prime numbers.' }];
  const first = await client.chat.completions.create({ model: MODEL_ID, messages, max_tokens: 4, seed: 3 });
  const second = await client.chat.completions.create({ model: MODEL_ID, messages, max_tokens: 4, seed: 3 });
  assert.ok(first.usage.prompt_tokens > 10);
  // The prefix cache holds whole KV blocks of 16 tokens, and the last prompt token is always computed (its
  // logits give the first new token): every full block before it comes from the cache.
  const block = 16;
  assert.equal(second.usage.prompt_tokens_details.cached_tokens,
    Math.floor((second.usage.prompt_tokens - 1) / block) * block);
  assert.ok(second.usage.prompt_tokens_details.cached_tokens > 0);
  assert.equal(second.choices[0].message.content, first.choices[0].message.content);
});

test('completions: string, list of strings, token ids, echo', async () => {
  const one = await client.completions.create({ model: MODEL_ID, prompt: 'Once upon a time', max_tokens: 5, ignore_eos: true });
  assert.equal(one.object, 'text_completion');
  assert.equal(one.choices.length, 1);
  assert.equal(one.usage.completion_tokens, 5);

  const two = await client.completions.create({ model: MODEL_ID, prompt: ['a b c', 'x y z'], max_tokens: 3, temperature: 0, ignore_eos: true });
  assert.deepEqual(two.choices.map((c) => c.index), [0, 1]);
  const alone = await client.completions.create({ model: MODEL_ID, prompt: 'x y z', max_tokens: 3, temperature: 0, ignore_eos: true });
  assert.equal(two.choices[1].text, alone.choices[0].text);

  // The prompt's ids as the server tokenizes text (BOS added, special-token spellings kept as text).
  const lines = execFileSync(BIN, ['tokenize', '-m', MODEL, '--add-special', '--no-parse-special'],
    { encoding: 'utf8', input: 'x y z' });
  const tokens = lines.trim().split('\n').map((l) => Number(l.split('\t')[0]));
  const byIds = await client.completions.create({ model: MODEL_ID, prompt: tokens, max_tokens: 3, temperature: 0, ignore_eos: true });
  assert.equal(byIds.choices[0].text, alone.choices[0].text);
  assert.equal(byIds.usage.prompt_tokens, tokens.length);

  const echoed = await client.completions.create({ model: MODEL_ID, prompt: 'x y z', max_tokens: 3, temperature: 0, echo: true, ignore_eos: true });
  assert.equal(echoed.choices[0].text, 'x y z' + alone.choices[0].text);
});

test('completions logprobs equal `deepmoe generate --logprobs` (CLI path)', async () => {
  const r = await client.completions.create({ model: MODEL_ID, prompt: 'Hello world', max_tokens: 4, temperature: 0, logprobs: 3, ignore_eos: true });
  const cli = execFileSync(BIN, ['generate', '-m', MODEL, '-p', 'Hello world', '-n', '4', '--temperature', '0',
    '--logprobs', '3', '--ignore-eos'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
    .trim().split('\n').map((l) => JSON.parse(l));
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, 4);
  assert.deepEqual(lp.tokens, cli.map((t) => t.text));
  for (let i = 0; i < 4; i++) {
    assert.ok(Math.abs(lp.token_logprobs[i] - cli[i].logprob) < 1e-9, `token ${i}`);
    assert.deepEqual(Object.keys(lp.top_logprobs[i]).length, 3);
    // Greedy: the chosen token is the most likely one.
    assert.ok(Math.abs(Math.max(...Object.values(lp.top_logprobs[i])) - lp.token_logprobs[i]) < 1e-12);
  }
  assert.equal(lp.text_offset[0], 0);
});

test('chat logprobs: token, logprob, bytes, sorted top_logprobs', async () => {
  const r = await client.chat.completions.create({ model: MODEL_ID, messages: hello, max_tokens: 5, logprobs: true, top_logprobs: 4, seed: 9, ignore_eos: true });
  const content = r.choices[0].logprobs.content;
  assert.equal(content.length, 5);
  for (const t of content) {
    assert.ok(t.logprob <= 0);
    assert.ok(Array.isArray(t.bytes));
    assert.equal(t.top_logprobs.length, 4);
    for (let i = 1; i < 4; i++) assert.ok(t.top_logprobs[i - 1].logprob >= t.top_logprobs[i].logprob);
    const mass = t.top_logprobs.reduce((s, a) => s + Math.exp(a.logprob), 0);
    assert.ok(mass <= 1 + 1e-9);
  }
});

test('error objects: 400 names the field and the numbers, 404 model, 401 key', async () => {
  await assert.rejects(client.chat.completions.create({ model: MODEL_ID, messages: hello, temperature: -1 }), (e) => {
    assert.equal(e.status, 400);
    assert.equal(e.param, 'temperature');
    assert.equal(e.type, 'invalid_request_error');
    assert.match(e.message, /temperature.*-1/);
    return true;
  });
  await assert.rejects(client.chat.completions.create({ model: MODEL_ID, messages: hello, max_tokens: 10000000 }), (e) => {
    assert.equal(e.status, 400);
    assert.equal(e.param, 'max_tokens');
    assert.equal(e.code, 'context_length_exceeded');
    assert.match(e.message, /10000000/);
    return true;
  });
  await assert.rejects(client.chat.completions.create({ model: 'no-such-model', messages: hello }), (e) => {
    assert.ok(e instanceof OpenAI.NotFoundError);
    assert.equal(e.code, 'model_not_found');
    return true;
  });
  const wrong = new OpenAI({ baseURL: server.url + '/v1', apiKey: KEY + 'x', maxRetries: 0 });
  await assert.rejects(wrong.chat.completions.create({ model: MODEL_ID, messages: hello, max_tokens: 1 }), (e) => {
    assert.ok(e instanceof OpenAI.AuthenticationError);
    assert.equal(e.type, 'authentication_error');
    return true;
  });
  const none = await fetch(server.url + '/v1/completions', { method: 'POST', body: '{}' });
  assert.equal(none.status, 401);
  // /health and /v1/models stay public.
  assert.equal((await fetch(server.url + '/health')).status, 200);
  assert.equal((await fetch(server.url + '/v1/models')).status, 200);
});

// A bounded load test on loopback: 100 concurrent streaming chat requests (a fixed count, then it stops) on the
// tiny model → no failure, every stream well-formed (each event parses, one role chunk, one finish_reason, usage,
// [DONE] last), and the server's RSS after the run within 10% of before it. The requests run as one batch, so a
// first two identical rounds bring the batch buffers and the KV block pool to their working size; the second round
// must then not grow the process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MODEL_ID, startServer, waitForMetrics, parseSse } from './server.mjs';

const CLIENTS = 100;

async function stream(url, i) {
  const r = await fetch(url + '/v1/chat/completions', { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: MODEL_ID, messages: [{ role: 'user', content: `Request ${i}: say something.` }],
      max_tokens: 8, seed: i, ignore_eos: true, stream: true, stream_options: { include_usage: true } }) });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/event-stream/);
  const events = parseSse(await r.text());
  assert.equal(events.at(-1), '[DONE]', `stream ${i} ends with [DONE]`);
  const chunks = events.slice(0, -1);
  assert.equal(chunks.filter((c) => c.choices[0]?.delta?.role === 'assistant').length, 1);
  assert.equal(chunks.filter((c) => c.choices[0]?.finish_reason).length, 1);
  assert.equal(chunks.at(-1).usage.completion_tokens, 8);
  return chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
}

test(`${CLIENTS} concurrent streams: 0 failures, well-formed, RSS within 10%`, async () => {
  const server = await startServer(['--max-queue', '128']);
  try {
    const round = async (first) => {
      const results = await Promise.allSettled(Array.from({ length: CLIENTS }, (_, i) => stream(server.url, first + i)));
      const failures = results.filter((r) => r.status === 'rejected');
      assert.equal(failures.length, 0, failures.map((f) => String(f.reason)).slice(0, 3).join('\n'));
      const m = await waitForMetrics(server.url, (x) => x.deepmoe_num_requests_running === 0);
      assert.equal(m.deepmoe_num_requests_waiting, 0);
      assert.equal(m.deepmoe_kv_blocks_used, 0, 'every KV block is back in the pool');
      return m;
    };
    // Two warm-up rounds: the server's HTTP threads are many, and which of them serve a round varies, so one round
    // may leave some threads' per-thread caches still to grow; a leak grows the process every round.
    await round(1000);
    await round(2000);
    const before = server.rssKb();
    const m = await round(0);
    assert.equal(m['deepmoe_requests_total{route="/v1/chat/completions",status="200"}'], 3 * CLIENTS);
    const after = server.rssKb();
    assert.ok(after <= before * 1.10, `RSS ${before} kB before, ${after} kB after`);
  } finally {
    assert.deepEqual(await server.stop(), { code: 0, signal: null }, server.log());
  }
});

// Faults: clients that vanish mid-stream, a client that reads nothing, a request cancelled while queued, a full
// queue, SIGTERM during streaming. The server must not crash, must cancel the abandoned work (seen through
// /metrics: nothing left running or waiting, KV caches bounded), and must keep answering.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { MODEL_ID, startServer, metrics, waitForMetrics, parseSse } from './server.mjs';

const longStream = (maxTokens) => JSON.stringify({
  model: MODEL_ID, messages: [{ role: 'user', content: 'Tell me a long story.' }], max_tokens: maxTokens,
  ignore_eos: true, stream: true,
});

// Sends a streaming request over a raw socket; resolves once the first `data:` event arrived, with the socket.
function openStream(port, body) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let seen = '';
    socket.on('error', reject);
    socket.on('close', () => reject(new Error('connection closed before the first event: ' + seen.slice(0, 200))));
    socket.on('data', (d) => {
      seen += d.toString();
      if (!seen.startsWith('HTTP/1.1 200')) { socket.destroy(); return; }
      if (seen.includes('data: {')) { socket.removeAllListeners('data'); socket.removeAllListeners('close'); resolve(socket); }
    });
    socket.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  });
}

const idle = (m) => m.deepmoe_num_requests_running === 0 && m.deepmoe_num_requests_waiting === 0;

test('50 clients disconnect mid-stream: each request is cancelled, nothing leaks', async () => {
  const server = await startServer(['--max-queue', '16']);
  try {
    for (let round = 0; round < 5; round++) {
      const sockets = await Promise.all(Array.from({ length: 10 }, () => openStream(server.port, longStream(4000))));
      for (const s of sockets) s.destroy();
      // Queued ones are noticed at their next heartbeat; each round starts on an idle server.
      await waitForMetrics(server.url, idle);
    }
    const m = await waitForMetrics(server.url, (x) => idle(x) && x.deepmoe_requests_cancelled_total >= 50);
    assert.equal(m.deepmoe_requests_cancelled_total, 50);
    assert.ok(idle(m), JSON.stringify(m));
    assert.equal(m.deepmoe_kv_blocks_used, 0, 'every KV block is back in the pool');
    assert.ok(m.deepmoe_kv_blocks_cached <= m.deepmoe_kv_blocks_total, 'the prefix cache stays within the budget');
    assert.equal((await fetch(server.url + '/health')).status, 200);
    const r = await fetch(server.url + '/v1/completions', { method: 'POST', body: JSON.stringify({ model: MODEL_ID, prompt: 'ok', max_tokens: 2 }) });
    assert.equal(r.status, 200);
  } finally {
    assert.deepEqual(await server.stop(), { code: 0, signal: null }, server.log());
  }
});

test('a client that reads nothing does not stop others; a queued request cancelled by its client leaves the queue', async () => {
  // One running request at a time, so that the second one queues behind the slow one.
  const server = await startServer(['--max-queue', '8', '--max-running', '1']);
  try {
    // The slow client: asks for a long stream and never reads it.
    const slow = net.connect(server.port, '127.0.0.1');
    slow.pause();
    const body = longStream(4000);
    slow.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    await waitForMetrics(server.url, (m) => m.deepmoe_num_requests_running === 1);
    // Others are still answered while it holds the engine.
    assert.equal((await fetch(server.url + '/health')).status, 200);
    // A request queued behind it, then abandoned by its client (the answer's headers come at admission).
    const controller = new AbortController();
    const queued = await fetch(server.url + '/v1/completions', { method: 'POST', signal: controller.signal,
      body: JSON.stringify({ model: MODEL_ID, prompt: 'queued', max_tokens: 2 }) });
    assert.equal(queued.status, 200);
    assert.equal((await metrics(server.url)).deepmoe_num_requests_waiting, 1);
    controller.abort();
    await assert.rejects(queued.text(), { name: 'AbortError' });
    let m = await waitForMetrics(server.url, (x) => x.deepmoe_num_requests_waiting === 0);
    assert.equal(m.deepmoe_num_requests_waiting, 0, 'the abandoned request left the queue');
    assert.equal(m.deepmoe_num_requests_running, 1, 'while the slow one still runs');
    slow.destroy();
    m = await waitForMetrics(server.url, (x) => idle(x) && x.deepmoe_requests_cancelled_total === 2);
    assert.ok(idle(m));
    assert.equal(m.deepmoe_requests_cancelled_total, 2);
  } finally {
    assert.deepEqual(await server.stop(), { code: 0, signal: null }, server.log());
  }
});

test('a full queue answers 429 with an OpenAI error', async () => {
  const server = await startServer(['--max-queue', '1', '--max-running', '1']);
  try {
    const running = await openStream(server.port, longStream(4000));
    await waitForMetrics(server.url, (m) => m.deepmoe_num_requests_running === 1);
    // One fits the queue (its answer's headers come at admission); the others are refused at once, while the
    // long stream still holds the engine.
    const responses = await Promise.all(Array.from({ length: 4 }, () => fetch(server.url + '/v1/completions', {
      method: 'POST', body: JSON.stringify({ model: MODEL_ID, prompt: 'x', max_tokens: 1 }) })));
    assert.deepEqual(responses.map((r) => r.status).sort(), [200, 429, 429, 429]);
    for (const r of responses.filter((x) => x.status === 429)) {
      const e = (await r.json()).error;
      assert.equal(e.type, 'rate_limit_error');
      assert.equal(e.code, 'queue_full');
    }
    assert.equal((await metrics(server.url)).deepmoe_num_requests_running, 1, 'the long stream still runs');
    running.destroy();
    const admitted = await responses.find((r) => r.status === 200).json();
    assert.equal(admitted.usage.completion_tokens, 1);
  } finally {
    assert.deepEqual(await server.stop(), { code: 0, signal: null }, server.log());
  }
});

test('SIGTERM during streaming: /health 503 while draining, the stream ends with [DONE], exit 0', async () => {
  const server = await startServer(['--drain-seconds', '60']);
  const response = await fetch(server.url + '/v1/chat/completions', { method: 'POST', body: longStream(100) });
  const reader = response.body.getReader();
  let text = new TextDecoder().decode((await reader.read()).value);
  server.child.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 200));
  const health = await fetch(server.url + '/health');
  assert.equal(health.status, 503);
  assert.equal((await health.json()).error.code, 'draining');
  const refused = await fetch(server.url + '/v1/completions', { method: 'POST', body: JSON.stringify({ model: MODEL_ID, prompt: 'x' }) });
  assert.equal(refused.status, 503);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  const events = parseSse(text);
  assert.equal(events.at(-1), '[DONE]');
  assert.equal(events.at(-2).choices[0].finish_reason, 'length');
  assert.deepEqual(await server.exit, { code: 0, signal: null }, server.log());
});

// A corpus of bad requests: each gets the documented 4xx status with an OpenAI
// error object naming the problem — never a 5xx, a hang or a crash — and the server stays healthy after all of
// them.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { MODEL_ID, startServer } from './server.mjs';

let server;
before(async () => { server = await startServer(['--max-body-mb', '2']); });
after(async () => {
  const status = await server.stop('SIGTERM');
  assert.deepEqual(status, { code: 0, signal: null }, server.log());
});

const chat = (extra) => JSON.stringify({ model: MODEL_ID, messages: [{ role: 'user', content: 'hi' }], max_tokens: 2, ...extra });
const completion = (extra) => JSON.stringify({ model: MODEL_ID, prompt: 'hi', max_tokens: 2, ...extra });
const deep = (n) => '{"model":"' + MODEL_ID + '","messages":' + '['.repeat(n) + ']'.repeat(n) + '}';

// [name, path, body (string or Buffer), status, param (undefined: not checked)]
const corpus = [
  ['malformed JSON', '/v1/chat/completions', '{"model": ', 400],
  ['empty body', '/v1/chat/completions', '', 400],
  ['array body', '/v1/chat/completions', '[]', 400],
  ['string body', '/v1/chat/completions', '"hello"', 400],
  ['null body', '/v1/chat/completions', 'null', 400],
  ['trailing garbage', '/v1/chat/completions', chat({}) + ' x', 400],
  ['NaN literal', '/v1/chat/completions', chat({}).replace('"max_tokens":2', '"max_tokens":2,"temperature":NaN'), 400],
  ['Infinity literal', '/v1/chat/completions', chat({}).replace('"max_tokens":2', '"max_tokens":2,"top_p":Infinity'), 400],
  ['temperature 1e400', '/v1/chat/completions', chat({}).replace('"max_tokens":2', '"max_tokens":2,"temperature":1e400'), 400],
  ['missing messages', '/v1/chat/completions', JSON.stringify({ model: MODEL_ID }), 400, 'messages'],
  ['empty messages', '/v1/chat/completions', chat({ messages: [] }), 400, 'messages'],
  ['messages is a string', '/v1/chat/completions', chat({ messages: 'hi' }), 400, 'messages'],
  ['message is a number', '/v1/chat/completions', chat({ messages: [3] }), 400, 'messages[0]'],
  ['unknown role', '/v1/chat/completions', chat({ messages: [{ role: 'wizard', content: 'x' }] }), 400, 'messages[0].role'],
  ['missing content', '/v1/chat/completions', chat({ messages: [{ role: 'user' }] }), 400, 'messages[0].content'],
  ['content is a number', '/v1/chat/completions', chat({ messages: [{ role: 'user', content: 5 }] }), 400, 'messages[0].content'],
  ['image part', '/v1/chat/completions', chat({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'file:///etc/passwd' } }] }] }), 400, 'messages[0].content[0].type'],
  ['missing model', '/v1/chat/completions', JSON.stringify({ messages: [{ role: 'user', content: 'hi' }] }), 400, 'model'],
  ['model is a number', '/v1/chat/completions', chat({ model: 7 }), 400, 'model'],
  ['unknown model', '/v1/chat/completions', chat({ model: 'gpt-17' }), 404, 'model'],
  ['unknown field', '/v1/chat/completions', chat({ frobnicate: true }), 400, 'frobnicate'],
  ['negative max_tokens', '/v1/chat/completions', chat({ max_tokens: -1 }), 400, 'max_tokens'],
  ['zero max_tokens', '/v1/chat/completions', chat({ max_tokens: 0 }), 400, 'max_tokens'],
  ['huge max_tokens', '/v1/chat/completions', chat({ max_tokens: 1e12 }), 400, 'max_tokens'],
  ['max_tokens 2^64', '/v1/chat/completions', chat({}).replace('"max_tokens":2', '"max_tokens":18446744073709551616'), 400, 'max_tokens'],
  ['max_tokens string', '/v1/chat/completions', chat({ max_tokens: '10' }), 400, 'max_tokens'],
  ['max_tokens fractional', '/v1/chat/completions', chat({ max_tokens: 1.5 }), 400, 'max_tokens'],
  ['negative temperature', '/v1/chat/completions', chat({ temperature: -1 }), 400, 'temperature'],
  ['temperature string', '/v1/chat/completions', chat({ temperature: 'hot' }), 400, 'temperature'],
  ['top_p 0', '/v1/chat/completions', chat({ top_p: 0 }), 400, 'top_p'],
  ['top_p 1.5', '/v1/chat/completions', chat({ top_p: 1.5 }), 400, 'top_p'],
  ['top_k -5', '/v1/chat/completions', chat({ top_k: -5 }), 400, 'top_k'],
  ['min_p 2', '/v1/chat/completions', chat({ min_p: 2 }), 400, 'min_p'],
  ['presence_penalty 3', '/v1/chat/completions', chat({ presence_penalty: 3 }), 400, 'presence_penalty'],
  ['frequency_penalty -3', '/v1/chat/completions', chat({ frequency_penalty: -3 }), 400, 'frequency_penalty'],
  ['repetition_penalty 0', '/v1/chat/completions', chat({ repetition_penalty: 0 }), 400, 'repetition_penalty'],
  ['n 0', '/v1/chat/completions', chat({ n: 0 }), 400, 'n'],
  ['n 1000000', '/v1/chat/completions', chat({ n: 1000000 }), 400, 'n'],
  ['100 stop strings', '/v1/chat/completions', chat({ stop: Array.from({ length: 100 }, (_, i) => 's' + i) }), 400, 'stop'],
  ['empty stop string', '/v1/chat/completions', chat({ stop: '' }), 400, 'stop'],
  ['stop is a number', '/v1/chat/completions', chat({ stop: 5 }), 400, 'stop'],
  ['logprobs string', '/v1/chat/completions', chat({ logprobs: 'yes' }), 400, 'logprobs'],
  ['top_logprobs 50', '/v1/chat/completions', chat({ logprobs: true, top_logprobs: 50 }), 400, 'top_logprobs'],
  ['top_logprobs without logprobs', '/v1/chat/completions', chat({ top_logprobs: 2 }), 400, 'top_logprobs'],
  ['stream string', '/v1/chat/completions', chat({ stream: 'true' }), 400, 'stream'],
  ['stream_options without stream', '/v1/chat/completions', chat({ stream_options: { include_usage: true } }), 400, 'stream_options'],
  ['seed string', '/v1/chat/completions', chat({ seed: 'x' }), 400, 'seed'],
  ['invalid UTF-8 in content', '/v1/chat/completions',
    Buffer.concat([Buffer.from('{"model":"' + MODEL_ID + '","messages":[{"role":"user","content":"a'), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('"}]}')]), 400],
  ['100,000-deep nesting', '/v1/chat/completions', deep(100000), 400],
  ['10 MB body', '/v1/chat/completions', chat({ messages: [{ role: 'user', content: 'x'.repeat(10 << 20) }] }), 413],
  ['completions: missing prompt', '/v1/completions', JSON.stringify({ model: MODEL_ID }), 400, 'prompt'],
  ['completions: empty prompt list', '/v1/completions', completion({ prompt: [] }), 400, 'prompt'],
  ['completions: negative token id', '/v1/completions', completion({ prompt: [1, -1] }), 400, 'prompt[1]'],
  ['completions: token id past the vocabulary', '/v1/completions', completion({ prompt: [1, 99999999] }), 400, 'prompt'],
  ['completions: mixed prompt list', '/v1/completions', completion({ prompt: ['a', 1] }), 400, 'prompt[1]'],
  ['completions: logprobs 10', '/v1/completions', completion({ logprobs: 10 }), 400, 'logprobs'],
  ['completions: echo with logprobs', '/v1/completions', completion({ echo: true, logprobs: 1 }), 400, 'echo'],
  ['completions: messages field', '/v1/completions', completion({ messages: [] }), 400, 'messages'],
  ['chat: prompt field', '/v1/chat/completions', chat({ prompt: 'x' }), 400, 'prompt'],
  ['prompt + max_tokens over the context', '/v1/completions', completion({ prompt: 'word '.repeat(20000), max_tokens: 200000 }), 400, 'max_tokens'],
  ['unknown route', '/v1/engines', '{}', 404],
];

test(`corpus of ${corpus.length} bad requests → documented 4xx, OpenAI error objects`, async () => {
  assert.ok(corpus.length >= 40);
  for (const [name, path, body, status, param] of corpus) {
    const r = await fetch(server.url + path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
    const text = await r.text();
    assert.equal(r.status, status, `${name}: ${text.slice(0, 300)}`);
    const e = JSON.parse(text).error;
    assert.equal(typeof e.message, 'string', name);
    assert.ok(e.message.length > 0, name);
    assert.equal(typeof e.type, 'string', name);
    if (param !== undefined) assert.equal(e.param, param, `${name}: ${e.message}`);
  }
  // The numbers are in the message: prompt length, max_tokens, context length.
  const r = await fetch(server.url + '/v1/chat/completions', { method: 'POST', body: chat({ max_tokens: 1e12 }) });
  assert.match((await r.json()).error.message, /1000000000000 new tokens after a prompt of \d+ exceed the model's context length of \d+ tokens \(at most \d+ fit\)/);
});

// Raw HTTP for what fetch will not send: bad Content-Length, header tricks, oversized headers.
function raw(request) {
  return new Promise((resolve) => {
    const socket = net.connect(server.port, '127.0.0.1');
    let data = '';
    socket.setTimeout(15000, () => socket.destroy());
    socket.on('data', (d) => { data += d.toString('latin1'); });
    socket.on('close', () => resolve(data));
    socket.on('error', () => resolve(data));
    // write, not end: a half-closed client makes some servers drop the answer; the server closes (Connection:
    // close) once it has answered.
    socket.write(request);
  });
}
const statusOf = (response) => Number((/^HTTP\/1\.1 (\d{3})/.exec(response) || [])[1] || 0);

test('HTTP-level abuse: bad Content-Length, header injection, huge header', async () => {
  const head = (extra) => `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n${extra}`;
  const body = chat({});
  const cases = [
    ['Content-Length not a number', head('Content-Length: abc\r\n\r\n'), [400]],
    ['negative Content-Length', head('Content-Length: -5\r\n\r\n'), [400, 413]],
    ['Content-Length over the limit', head('Content-Length: 99999999999\r\n\r\n'), [413]],
    ['Content-Length shorter than the body', head(`Content-Length: ${body.length - 5}\r\n\r\n`) + body, [400]],
    ['CRLF in the path', 'GET /health%0d%0aInjected:%20yes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', [404]],
    ['header line without a colon', 'GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nno colon here\r\n\r\n', [200, 400]],
    ['100 KB header', `GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: ${'a'.repeat(100000)}\r\n\r\n`, [0, 400, 413, 431]],
    ['garbage request line', 'HELLO\r\n\r\n', [0, 400]],
  ];
  for (const [name, request, allowed] of cases) {
    const response = await raw(request);
    const status = statusOf(response);
    assert.ok(allowed.includes(status), `${name}: got ${status} ${response.slice(0, 200)}`);
    assert.ok(status < 500, name);
  }
  // The injected header text stays inside one JSON-escaped access-log line.
  assert.ok(!/^Injected/m.test(server.log()), 'a request path must not start a log line');
});

test('server is healthy after the corpus', async () => {
  assert.equal(server.exited(), null);
  assert.equal((await fetch(server.url + '/health')).status, 200);
  const r = await fetch(server.url + '/v1/chat/completions', { method: 'POST', body: chat({ max_tokens: 3 }) });
  assert.equal(r.status, 200);
  assert.equal((await r.json()).choices[0].finish_reason !== undefined, true);
  const metrics = await (await fetch(server.url + '/metrics')).text();
  // No 5xx on any route but /health (503 while the model loaded).
  assert.doesNotMatch(metrics, /route="(?!\/health)[^"]*",status="5\d\d"/);
});

// response_format through the official `openai` npm package: json_object and json_schema (plain, strict,
// streamed, n > 1) give content that parses and validates (ajv, an independent validator); schemas the engine
// cannot enforce, or that accept nothing, and malformed response_format objects are 400s naming the field.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { MODEL_ID, startServer } from './server.mjs';

let server;
let client;
const ajv = new Ajv2020({ strict: false });
addFormats(ajv);

before(async () => {
  server = await startServer();
  client = new OpenAI({ baseURL: server.url + '/v1', apiKey: 'none', maxRetries: 0, timeout: 60000 });
});

after(async () => {
  const status = await server.stop('SIGTERM');
  assert.deepEqual(status, { code: 0, signal: null }, server.log());
});

const messages = [{ role: 'user', content: 'Describe a person as JSON.' }];
const person = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 12 },
    age: { type: 'integer', minimum: 0, maximum: 130 },
    id: { type: 'string', format: 'uuid' },
    role: { enum: ['admin', 'user', 'guest'] },
    tags: { type: 'array', items: { type: 'string', maxLength: 6 }, maxItems: 3 },
  },
  required: ['name', 'age', 'role', 'tags'],
  additionalProperties: false,
};

test('json_schema: content validates, finish_reason stop', async () => {
  const validate = ajv.compile(person);
  for (const seed of [1, 2, 3]) {
    const r = await client.chat.completions.create({
      model: MODEL_ID, messages, seed, temperature: 1, max_tokens: 400,
      response_format: { type: 'json_schema', json_schema: { name: 'person', schema: person, strict: true } },
    });
    const c = r.choices[0];
    assert.equal(c.finish_reason, 'stop', c.message.content);
    const value = JSON.parse(c.message.content);
    assert.ok(validate(value), JSON.stringify(validate.errors) + ' ' + c.message.content);
    assert.deepEqual(Object.keys(value).slice(0, 2), ['name', 'age']);  // properties in schema order
    assert.equal(r.usage.completion_tokens > 0, true);
  }
});

test('json_schema streamed and with n = 8', async () => {
  const validate = ajv.compile(person);
  const stream = await client.chat.completions.create({
    model: MODEL_ID, messages, seed: 7, temperature: 1, max_tokens: 400, stream: true,
    response_format: { type: 'json_schema', json_schema: { name: 'person', schema: person } },
  });
  let text = '';
  let finish = null;
  for await (const chunk of stream) {
    if (chunk.choices.length) {
      text += chunk.choices[0].delta.content ?? '';
      finish = chunk.choices[0].finish_reason ?? finish;
    }
  }
  assert.equal(finish, 'stop');
  assert.ok(validate(JSON.parse(text)), text);
  const two = await client.chat.completions.create({
    model: MODEL_ID, messages, seed: 9, temperature: 1, max_tokens: 400, n: 8,
    response_format: { type: 'json_schema', json_schema: { name: 'person', schema: person } },
  });
  assert.equal(two.choices.length, 8);
  for (const c of two.choices) assert.ok(validate(JSON.parse(c.message.content)), c.message.content);
});

test('json_object: a JSON object', async () => {
  for (const seed of [1, 2]) {
    const r = await client.chat.completions.create({
      model: MODEL_ID, messages, seed, temperature: 1, max_tokens: 300, response_format: { type: 'json_object' },
    });
    const c = r.choices[0];
    assert.equal(c.message.content[0], '{');
    if (c.finish_reason === 'stop') {
      const v = JSON.parse(c.message.content);
      assert.equal(typeof v, 'object');
      assert.ok(v !== null && !Array.isArray(v));
    }
  }
  const text = await client.chat.completions.create({
    model: MODEL_ID, messages, seed: 1, max_tokens: 4, ignore_eos: true, response_format: { type: 'text' },
  });
  assert.equal(text.choices[0].finish_reason, 'length');
});

test('unsupported, unsatisfiable and malformed formats are 400s naming the field', async () => {
  const rejects = async (response_format, param, pattern) => {
    await assert.rejects(client.chat.completions.create({ model: MODEL_ID, messages, max_tokens: 4, response_format }), (e) => {
      assert.equal(e.status, 400);
      assert.equal(e.param, param);
      assert.match(e.message, pattern);
      return true;
    });
  };
  await rejects({ type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', properties: { a: { not: { type: 'string' } } } } } },
    'response_format.json_schema.schema', /'not' at \/properties\/a/);
  await rejects({ type: 'json_schema', json_schema: { name: 'x', schema: { type: 'string', pattern: '(?=a)' } } },
    'response_format.json_schema.schema', /pattern/);
  await rejects({ type: 'json_schema', json_schema: { name: 'x', schema: { enum: [] } } },
    'response_format.json_schema.schema', /accepts no value/);
  await rejects({ type: 'json_schema', json_schema: { name: 'x' } }, 'response_format.json_schema.schema', /missing/);
  await rejects({ type: 'json_schema' }, 'response_format.json_schema', /missing/);
  await rejects({ type: 'yaml' }, 'response_format.type', /not one of text, json_object, json_schema/);
  await rejects({ type: 'json_object', extra: 1 }, 'response_format.extra', /not a recognized field/);
});

test('token_healing backs off the prompt end; a non-boolean is a 400', async () => {
  const params = { model: MODEL_ID, prompt: 'Visit the site at http:', max_tokens: 4, seed: 1, ignore_eos: true };
  const healed = await client.completions.create({ ...params, token_healing: true, logprobs: 0 });
  const c = healed.choices[0];
  assert.equal(c.finish_reason, 'length');
  // The generated tokens start with the backed-off end of the prompt, which the text does not repeat.
  const spelled = c.logprobs.tokens.join('');
  const removed = spelled.slice(0, spelled.length - c.text.length);
  assert.ok(removed.length > 0 && params.prompt.endsWith(removed), JSON.stringify({ spelled, text: c.text }));
  assert.equal(spelled.slice(removed.length), c.text);
  await assert.rejects(client.completions.create({ ...params, token_healing: 'yes' }), (e) => {
    assert.equal(e.status, 400);
    assert.equal(e.param, 'token_healing');
    return true;
  });
});

// Every output generated under a JSON Schema validates with ajv, a validator independent of the engine: the
// JSON-Schema-Test-Suite draft 2020-12 schemas the compiler accepts plus hand-written real-world ones
// (schemas/real_world.json), several seeds each, through one server per model — the bundled trained model and the
// tiny random one (129k vocabulary) — and a subset through `deepmoe generate --speculative mtp`. Schemas the
// compiler refuses must be 400s naming response_format.json_schema.schema. Outputs cut short by max_tokens are
// closed by the engine, so they must validate too. A subset also runs eight at a time through the batch scheduler
// (`deepmoe generate --parallel 8`: eight sequences of one schema in every forward, each with its own matcher),
// with and without MTP speculation in the scheduler.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { BIN, MODEL, startServer } from './server.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const SUITE = join(here, '../../data/json-schema-test-suite/draft2020-12');
const DEFAULT_MODEL = process.env.DEEPMOE_DEFAULT_MODEL;
// Budgets that fit the shortest valid output of every schema (the default model's 2048-token vocabulary spells
// a UUID or a date-time in many tokens); the engine closes outputs that would run past them.
const MAX_TOKENS = { default: 160, tiny: 40 };

function suiteSchemas() {
  const out = [];
  const walk = (dir) => {
    for (const f of readdirSync(dir).sort()) {
      const p = join(dir, f);
      if (statSync(p).isDirectory()) walk(p);
      else if (f.endsWith('.json')) for (const c of JSON.parse(readFileSync(p, 'utf8'))) out.push({ name: `${relative(SUITE, p)}: ${c.description}`, schema: c.schema });
    }
  };
  walk(SUITE);
  return out;
}

const realWorld = JSON.parse(readFileSync(join(here, 'schemas/real_world.json'), 'utf8'));
const seen = new Set();
const schemas = [...suiteSchemas(), ...realWorld].filter((s) => {
  const key = JSON.stringify(s.schema);
  return seen.has(key) ? false : (seen.add(key), true);
});

// ajv for one schema (its own instance: suite schemas reuse $id values). A custom $schema (a metaschema ajv does not
// have) is dropped: the keywords are what is validated.
function validatorFor(schema) {
  const ajv = new Ajv2020({ strict: false, allErrors: false });
  addFormats(ajv);
  const copy = schema !== null && typeof schema === 'object' ? structuredClone(schema) : schema;
  if (copy && typeof copy === 'object') delete copy.$schema;
  return ajv.compile(copy);
}

function check(result, entry, text, finish, where) {
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    result.unparsed.push(`${where} ${entry.name} [${finish}]: ${text}`);
    return;
  }
  const validate = validatorFor(entry.schema);
  if (validate(value)) result.valid++;
  else result.invalid.push(`${where} ${entry.name}: ${text} ${JSON.stringify(validate.errors)}`);
  if (finish === 'length') result.closed++;
}

async function pool(items, concurrency, fn) {
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < items.length) await fn(items[next++]);
  }));
}

async function serverRun(model, seeds, maxTokens) {
  const server = await startServer(['-t', '1'], model);
  const client = new OpenAI({ baseURL: server.url + '/v1', apiKey: 'none', maxRetries: 0, timeout: 120000 });
  const modelId = model.replace(/\/+$/, '').split('/').pop();
  const result = { schemas: schemas.length, refused: 0, accepted: [], outputs: 0, valid: 0, closed: 0, invalid: [], unparsed: [] };
  const started = Date.now();
  try {
    await pool(schemas, 2, async (entry) => {
      for (const seed of seeds) {
        let r;
        try {
          r = await client.chat.completions.create({
            model: modelId, messages: [{ role: 'user', content: 'Answer with JSON.' }], seed, temperature: 1,
            max_tokens: maxTokens,
            response_format: { type: 'json_schema', json_schema: { name: 'answer', schema: entry.schema } },
          });
        } catch (e) {
          assert.equal(e.status, 400, `${entry.name}: ${e.message}`);
          assert.equal(e.param, 'response_format.json_schema.schema', `${entry.name}: ${e.message}`);
          result.refused++;
          return;
        }
        if (seed === seeds[0]) result.accepted.push(entry);
        result.outputs++;
        check(result, entry, r.choices[0].message.content, r.choices[0].finish_reason, `seed ${seed}`);
      }
    });
  } finally {
    const status = await server.stop('SIGTERM');
    assert.deepEqual(status, { code: 0, signal: null }, server.log());
  }
  result.seconds = (Date.now() - started) / 1000;
  return result;
}

function summary(t, label, r) {
  t.diagnostic(`${label}: ${JSON.stringify({ schemas: r.schemas, compiled: r.accepted.length, refused: r.refused, outputs: r.outputs, valid: r.valid, closed_at_max_tokens: r.closed, invalid: r.invalid.length, unparsed: r.unparsed.length, seconds: r.seconds })}`);
  assert.deepEqual(r.invalid, []);
  assert.deepEqual(r.unparsed, []);
  assert.ok(r.accepted.length >= 200, `only ${r.accepted.length} schemas compiled`);
  assert.equal(r.valid, r.outputs);
}

let acceptedByDefault = [];

test('trained default model: >= 200 schemas x 3 seeds, every output valid (ajv)', { skip: !DEFAULT_MODEL && 'DEEPMOE_DEFAULT_MODEL not set' }, async (t) => {
  const r = await serverRun(DEFAULT_MODEL, [1, 2, 3], MAX_TOKENS.default);
  summary(t, 'default model', r);
  acceptedByDefault = r.accepted;
});

test('tiny random model (129k vocabulary): >= 200 schemas x 2 seeds, every output valid (ajv)', async (t) => {
  const r = await serverRun(MODEL, [11, 12], MAX_TOKENS.tiny);
  summary(t, 'tiny model', r);
});

test('--speculative mtp through deepmoe generate: outputs valid (ajv)', { skip: !DEFAULT_MODEL && 'DEEPMOE_DEFAULT_MODEL not set' }, async (t) => {
  const run = promisify(execFile);
  // Every 4th accepted schema (real-world ones included), one seed each, K = 2 drafts.
  const subset = acceptedByDefault.filter((_, i) => i % 4 === 0);
  assert.ok(subset.length >= 50, `${subset.length} schemas`);
  const result = { outputs: 0, valid: 0, closed: 0, invalid: [], unparsed: [] };
  let drafts = 0, proposed = 0;
  await pool(subset, 2, async (entry) => {
    const { stdout, stderr } = await run(BIN, ['generate', '-m', DEFAULT_MODEL, '-p', 'JSON:', '-q', '--seed', '5',
      '--temperature', '1', '-n', String(MAX_TOKENS.default), '--speculative', 'mtp', '--draft-tokens', '2',
      '--json-schema', JSON.stringify(entry.schema)]);
    // (An output complete after its first token has no verification step and no drafts line.)
    const m = /drafts accepted (\d+)\/(\d+)/.exec(stderr);
    if (m) drafts += Number(m[1]), proposed += Number(m[2]);
    result.outputs++;
    check(result, entry, stdout, /finish length/.test(stderr) ? 'length' : 'stop', 'speculative');
  });
  t.diagnostic(`speculative: ${JSON.stringify({ outputs: result.outputs, valid: result.valid, closed_at_max_tokens: result.closed, accepted_drafts: drafts, proposed_drafts: proposed })}`);
  assert.deepEqual(result.invalid, []);
  assert.deepEqual(result.unparsed, []);
  assert.ok(drafts > 0 && drafts < proposed, `${drafts} of ${proposed} drafts accepted`);  // some rejected and rolled back
});

// `generate --parallel 8` prints "=== completion i (seed s, finish) ===" and then the completion's text; a compact
// JSON output is one line (its strings escape newlines).
function parallelCompletions(stdout) {
  const lines = stdout.split('\n');
  const out = [];
  for (let i = 0; i < lines.length; i++) {
    const m = /^=== completion (\d+) \(seed (\d+), (\w+)\) ===$/.exec(lines[i]);
    if (m) out.push({ index: Number(m[1]), finish: m[3], text: lines[++i] });
  }
  return out;
}

async function batchedRun(t, label, model, subset, maxTokens, extraArgs = []) {
  const run = promisify(execFile);
  const result = { outputs: 0, valid: 0, closed: 0, invalid: [], unparsed: [] };
  const started = Date.now();
  let drafts = 0, proposed = 0;
  await pool(subset, 2, async (entry) => {
    const { stdout, stderr } = await run(BIN, ['generate', '-m', model, '-p', 'JSON:', '-q', '--seed', '21', '-t', '1',
      '--temperature', '1', '-n', String(maxTokens), '--parallel', '8', ...extraArgs,
      '--json-schema', JSON.stringify(entry.schema)], { maxBuffer: 16 << 20 });
    const m = /drafts accepted (\d+)\/(\d+)/.exec(stderr);
    if (m) drafts += Number(m[1]), proposed += Number(m[2]);
    const completions = parallelCompletions(stdout);
    assert.deepEqual(completions.map((c) => c.index), [0, 1, 2, 3, 4, 5, 6, 7], `${entry.name}: ${stdout}`);
    for (const c of completions) {
      result.outputs++;
      check(result, entry, c.text, c.finish === 'length' ? 'length' : 'stop', `batch 8, completion ${c.index}`);
    }
  });
  t.diagnostic(`${label}: ${JSON.stringify({ schemas: subset.length, outputs: result.outputs, valid: result.valid, closed_at_max_tokens: result.closed, accepted_drafts: drafts, proposed_drafts: proposed, seconds: (Date.now() - started) / 1000 })}`);
  assert.deepEqual(result.invalid, []);
  assert.deepEqual(result.unparsed, []);
  assert.equal(result.valid, result.outputs);
  return { drafts, proposed };
}

test('batch 8 through the scheduler (generate --parallel 8): every output valid (ajv)', { skip: !DEFAULT_MODEL && 'DEEPMOE_DEFAULT_MODEL not set' }, async (t) => {
  // Every 4th accepted schema on the default model, every 24th on the tiny one (129k-token masks), 8 completions each.
  const subset = acceptedByDefault.filter((_, i) => i % 4 === 1);
  assert.ok(subset.length >= 50, `${subset.length} schemas`);
  await batchedRun(t, 'batch 8, default model', DEFAULT_MODEL, subset, MAX_TOKENS.default);
  await batchedRun(t, 'batch 8, tiny model', MODEL, acceptedByDefault.filter((_, i) => i % 24 === 5), MAX_TOKENS.tiny);
});

test('batch 8 with --speculative mtp in the scheduler: every output valid (ajv)', { skip: !DEFAULT_MODEL && 'DEEPMOE_DEFAULT_MODEL not set' }, async (t) => {
  // Drafts are drawn under each request's mask and verified with the masks kept per draft position; rejected ones
  // roll its matcher back. Every 6th accepted schema, 8 completions each, K = 2 drafts.
  const subset = acceptedByDefault.filter((_, i) => i % 6 === 2);
  assert.ok(subset.length >= 30, `${subset.length} schemas`);
  const { drafts, proposed } = await batchedRun(t, 'batch 8, --speculative mtp, default model', DEFAULT_MODEL, subset,
    MAX_TOKENS.default, ['--speculative', 'mtp', '--draft-tokens', '2']);
  assert.ok(drafts > 0 && drafts < proposed, `${drafts} of ${proposed} drafts accepted`);  // some rejected and rolled back
});

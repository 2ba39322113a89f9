// Starts `deepmoe serve` on the tiny test model, on 127.0.0.1 and a free port (--port 0: the server picks one and
// prints it), and waits until /health says ok. Every test file starts its own server and stops it at the end.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

export const BIN = process.env.DEEPMOE_BIN;
export const MODEL = process.env.DEEPMOE_TEST_MODEL;
if (!BIN || !MODEL) throw new Error('DEEPMOE_BIN and DEEPMOE_TEST_MODEL must be set (ctest sets them)');
export const MODEL_ID = MODEL.replace(/\/+$/, '').split('/').pop();

export async function startServer(extraArgs = [], model = MODEL) {
  const child = spawn(BIN, ['serve', '-m', model, '--host', '127.0.0.1', '--port', '0', ...extraArgs], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  let exited = null;
  // A test runner that dies (timeout) must not leave servers behind.
  process.on('exit', () => { if (!exited) child.kill('SIGKILL'); });
  const exit = new Promise((resolve) => child.on('exit', (code, signal) => { exited = { code, signal }; resolve(exited); }));
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('server did not print its port in 60 s:\n' + log)), 60000);
    child.stderr.on('data', (d) => {
      log += d.toString();
      const m = log.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    child.on('exit', () => { clearTimeout(timer); reject(new Error('server exited before listening:\n' + log)); });
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60000;
  for (;;) {
    if (exited) throw new Error('server exited while loading:\n' + log);
    try {
      const r = await fetch(url + '/health');
      if (r.status === 200) break;
    } catch { /* not accepting yet */ }
    if (Date.now() > deadline) throw new Error('server not healthy in 60 s:\n' + log);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    port,
    child,
    log: () => log,
    exited: () => exited,
    exit,
    rssKb: () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))[1]),
    async stop(signal = 'SIGTERM') {
      if (!exited) child.kill(signal);
      return exit;
    },
  };
}

// The server's /metrics as { 'name{labels}': value }.
export async function metrics(url) {
  const text = await (await fetch(url + '/metrics')).text();
  const out = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out[line.slice(0, i)] = Number(line.slice(i + 1));
  }
  return out;
}

// Polls until `predicate(metrics)` holds (at most `ms`), returning the last metrics read.
export async function waitForMetrics(url, predicate, ms = 20000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const m = await metrics(url);
    if (predicate(m) || Date.now() > deadline) return m;
    await new Promise((r) => setTimeout(r, 50));
  }
}

// A raw SSE stream body → the parsed `data:` payloads (JSON objects, and the final '[DONE]' string).
export function parseSse(text) {
  const events = [];
  for (const block of text.split('\n\n')) {
    for (const line of block.split('\n')) {
      if (line.startsWith('data: ')) {
        const data = line.slice(6);
        events.push(data === '[DONE]' ? data : JSON.parse(data));
      }
    }
  }
  return events;
}

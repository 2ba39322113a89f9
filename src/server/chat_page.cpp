#include "server/chat_page.h"

namespace deepmoe::server {

std::string_view chat_page_html() {
  static constexpr std::string_view page = R"page(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>deepmoe chat</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 0; background: #f6f6f4; color: #222; }
  header { padding: 10px 16px; background: #223; color: #eee; display: flex; gap: 16px; align-items: center; }
  header h1 { font-size: 18px; margin: 0; }
  header label { font-size: 13px; }
  header input { width: 70px; }
  #model { font-family: monospace; }
  main { max-width: 860px; margin: 0 auto; padding: 16px; }
  #log { display: flex; flex-direction: column; gap: 10px; min-height: 50vh; }
  .msg { padding: 10px 12px; border-radius: 8px; white-space: pre-wrap; word-wrap: break-word; line-height: 1.4; }
  .user { background: #dde7ff; align-self: flex-end; max-width: 80%; }
  .assistant { background: #fff; border: 1px solid #ddd; max-width: 90%; }
  .error { background: #ffe0e0; border: 1px solid #e99; }
  .stats { font-size: 12px; color: #666; margin-top: 4px; }
  form { display: flex; gap: 8px; margin-top: 16px; }
  textarea { flex: 1; font: inherit; padding: 8px; min-height: 48px; }
  button { font: inherit; padding: 8px 16px; }
</style>
</head>
<body>
<header>
  <h1>deepmoe</h1>
  <span id="model">…</span>
  <label>max tokens <input id="max_tokens" type="number" value="256" min="1"></label>
  <label>temperature <input id="temperature" type="number" value="0.6" min="0" step="0.1"></label>
  <label>API key <input id="api_key" type="password" placeholder="(none)" style="width:120px"></label>
  <button id="reset" type="button">New chat</button>
</header>
<main>
  <div id="log"></div>
  <form id="form">
    <textarea id="input" placeholder="Message (Enter to send, Shift+Enter for a new line)"></textarea>
    <button id="send" type="submit">Send</button>
  </form>
</main>
<script>
'use strict';
const log = document.getElementById('log');
const form = document.getElementById('form');
const input = document.getElementById('input');
const send = document.getElementById('send');
let model = null;
let history = [];

async function loadModel() {
  const r = await fetch('/v1/models');
  if (!r.ok) { document.getElementById('model').textContent = 'not ready (' + r.status + ')'; setTimeout(loadModel, 1000); return; }
  model = (await r.json()).data[0].id;
  document.getElementById('model').textContent = model;
}

function bubble(role, text) {
  const div = document.createElement('div');
  div.className = 'msg ' + role;
  div.textContent = text;
  log.appendChild(div);
  div.scrollIntoView({ block: 'end' });
  return div;
}

// Reads the SSE body: `data: {...}` events until `data: [DONE]`.
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of block.split('\n')) {
        if (!line.startsWith('data: ')) continue;
        const data = line.slice(6);
        if (data === '[DONE]') return;
        yield JSON.parse(data);
      }
    }
  }
}

async function chat(text) {
  history.push({ role: 'user', content: text });
  bubble('user', text);
  const reply = bubble('assistant', '');
  const body = document.createElement('span');
  const stats = document.createElement('div');
  stats.className = 'stats';
  reply.append(body, stats);
  const headers = { 'Content-Type': 'application/json' };
  const key = document.getElementById('api_key').value;
  if (key) headers.Authorization = 'Bearer ' + key;
  const start = performance.now();
  // While streaming, each content chunk is one decoded step; the final count comes from usage.
  let first = null, last = null, chunks = 0, tokens = 0, content = '';
  const rate = (n) => (last > first ? ((n - 1) / ((last - first) / 1000)).toFixed(1) : '–');
  try {
    const r = await fetch('/v1/chat/completions', { method: 'POST', headers, body: JSON.stringify({
      model, messages: history, stream: true, stream_options: { include_usage: true },
      max_tokens: Number(document.getElementById('max_tokens').value),
      temperature: Number(document.getElementById('temperature').value) }) });
    if (!r.ok) throw new Error((await r.json()).error.message);
    for await (const chunk of events(r)) {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
      const delta = chunk.choices.length ? chunk.choices[0].delta.content : null;
      if (!delta) continue;
      last = performance.now();
      if (first === null) first = last;
      chunks++;
      content += delta;
      body.textContent = content;
      stats.textContent = `first token ${((first - start) / 1000).toFixed(2)} s · ${rate(chunks)} tok/s`;
    }
    stats.textContent = `${tokens} tokens · first token ${first === null ? '–' : ((first - start) / 1000).toFixed(2) + ' s'}` +
      ` · ${rate(tokens)} tok/s`;
    stats.dataset.done = 'true';
    history.push({ role: 'assistant', content });
  } catch (e) {
    reply.className = 'msg error';
    body.textContent = 'Error: ' + e.message;
    history.pop();
  }
}

form.addEventListener('submit', async (e) => {
  e.preventDefault();
  const text = input.value.trim();
  if (!text || !model) return;
  input.value = '';
  send.disabled = true;
  try { await chat(text); } finally { send.disabled = false; input.focus(); }
});
input.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
});
document.getElementById('reset').addEventListener('click', () => { history = []; log.textContent = ''; });
loadModel();
</script>
</body>
</html>
)page";
  return page;
}

}  // namespace deepmoe::server

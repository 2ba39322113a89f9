// The chat page at / in headless Chromium (Debian's chromium, driven by puppeteer-core over the DevTools
// protocol): load it, send a message, see the reply stream in (several distinct partial texts before the end)
// with its tokens/s line, and keep a screenshot as a test artifact (chat_page.png in the test's folder).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import puppeteer from 'puppeteer-core';
import { startServer } from './server.mjs';

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
const SCREENSHOT = process.env.DEEPMOE_ARTIFACT_DIR ? process.env.DEEPMOE_ARTIFACT_DIR + '/chat_page.png' : 'chat_page.png';

test('chat page streams a reply in headless Chromium', { timeout: 120000 }, async () => {
  assert.ok(CHROMIUM, 'chromium is not installed (scripts/install-deps installs it)');
  const server = await startServer();
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
  });
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1000, height: 700 });
    const response = await page.goto(server.url + '/', { waitUntil: 'load' });
    assert.equal(response.status(), 200);
    assert.equal(response.headers()['content-type'], 'text/html; charset=utf-8');
    await page.waitForFunction(() => document.getElementById('model').textContent === 'tiny_model');
    await page.$eval('#max_tokens', (e) => { e.value = '40'; });
    // Record every distinct text the reply bubble shows, to see it grow while streaming.
    await page.evaluate(() => {
      window.seen = [];
      new MutationObserver(() => {
        const body = document.querySelector('.assistant span');
        if (body && body.textContent !== window.seen.at(-1)) window.seen.push(body.textContent);
      }).observe(document.getElementById('log'), { subtree: true, childList: true, characterData: true });
    });
    await page.type('#input', 'Hello from the browser test');
    await page.click('#send');
    await page.waitForSelector('.stats[data-done="true"]', { timeout: 90000 });
    const user = await page.$eval('.user', (e) => e.textContent);
    assert.equal(user, 'Hello from the browser test');
    const seen = await page.evaluate(() => window.seen);
    const final = await page.$eval('.assistant span', (e) => e.textContent);
    const stats = await page.$eval('.stats', (e) => e.textContent);
    assert.ok(final.length > 0);
    assert.ok(seen.length >= 3, `the reply appeared in ${seen.length} step(s), not streamed`);
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i].startsWith(seen[i - 1]), 'each step extends the last');
    assert.equal(seen.at(-1), final);
    assert.match(stats, /^\d+ tokens · first token \d+\.\d\d s · \d+\.\d tok\/s$/);
    assert.equal(await page.$('.error'), null);
    await page.screenshot({ path: SCREENSHOT });
  } finally {
    await browser.close();
    assert.deepEqual(await server.stop(), { code: 0, signal: null }, server.log());
  }
});

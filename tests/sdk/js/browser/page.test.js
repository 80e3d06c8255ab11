'use strict';
// Drives examples/browser in headless Chromium: the SDK loads from node_modules, connects
// cross-origin to the gateway, shows `me`, and follows a server-side rename.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');
const { env, server, uid, token } = require('../lib/gateway');
const { startStaticServer } = require('../lib/static-server');

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

let site;
let context;
let profileDir;

before(async () => {
  site = await startStaticServer();
  profileDir = fs.mkdtempSync(path.join(os.tmpdir(), 'chat-gateway-chromium-'));
  // A persistent context is how Playwright takes a user-data-dir; a fresh one every run.
  context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
  });
});

after(async () => {
  if (context) await context.close().catch(() => {});
  if (site) await site.close();
  if (profileDir) fs.rmSync(profileDir, { recursive: true, force: true });
});

/** Open a page and collect what it reports, so a failure shows the page's own errors. */
async function openPage(query) {
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console: ${msg.text()}`);
  });
  page.on('requestfailed', (req) => problems.push(`requestfailed: ${req.url()}`));
  page.on('response', (res) => {
    if (res.status() >= 400) problems.push(`HTTP ${res.status()}: ${res.url()}`);
  });
  await page.goto(`${site.url}/index.html?${new URLSearchParams(query)}`);
  return { page, problems };
}

async function screenshot(page, name) {
  const dir = process.env.BROWSER_SCREENSHOT_DIR;
  if (dir) await page.screenshot({ path: path.join(dir, `${name}.png`) });
}

test('the page connects, shows me, and follows a server-side rename', async () => {
  const id = uid('browser');
  await server.upsertUser({ id, name: `Before ${id}`, role: 'admin' });

  const { page, problems } = await openPage({
    api_key: env.apiKey,
    base_url: env.publicUrl,
    user_id: id,
    token: token(id),
  });
  const details = () => problems.join('\n');

  try {
    await page.waitForSelector('#presence[data-online="true"]', { timeout: 15000 });
  } catch (err) {
    await screenshot(page, 'connect-failed');
    const shown = await page.textContent('#error');
    throw new Error(`page did not come online: ${shown}\n${details()}`);
  }
  assert.equal(await page.textContent('#status'), 'online');
  assert.equal(await page.textContent('#user-id'), id);
  assert.equal(await page.textContent('#user-name'), `Before ${id}`);
  assert.equal(await page.textContent('#user-role'), 'admin');

  await server.partialUpdateUser({ id, set: { name: `After ${id}` } });
  await page.waitForFunction(
    (expected) => document.getElementById('user-name').textContent === expected,
    `After ${id}`,
    { timeout: 10000 },
  );
  await screenshot(page, 'renamed');
  assert.equal(await page.textContent('#user-role'), 'admin');
  assert.deepEqual(problems, [], details());

  // The gateway sees the browser connection as the user being online.
  const { users } = await server.queryUsers({ id });
  assert.equal(users[0].online, true);
  await page.close();
});

test('the page shows a refusal instead of hanging', async () => {
  const id = uid('browser-bad');
  const { page } = await openPage({
    api_key: env.apiKey,
    base_url: env.publicUrl,
    user_id: id,
    token: token(id, { exp: Math.floor(Date.now() / 1000) - 60 }),
  });
  await page.waitForFunction(
    () => document.getElementById('status').textContent === 'connection refused',
    null,
    { timeout: 15000 },
  );
  assert.match(await page.textContent('#error'), /code 40/);
  assert.equal(await page.getAttribute('#presence', 'data-online'), 'false');
  await page.close();
});

test('the page explains missing parameters', async () => {
  const { page, problems } = await openPage({});
  await page.waitForFunction(() => document.getElementById('error').textContent !== '');
  assert.match(await page.textContent('#error'), /api_key, base_url, user_id and token/);
  assert.deepEqual(problems, []);
  await page.close();
});

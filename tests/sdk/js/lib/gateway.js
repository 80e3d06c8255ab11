'use strict';
// Shared helpers for the JS SDK conformance suite: where the gateway is, how to build
// clients and tokens the way an integrator would, and small waiting utilities.

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { StreamChat } = require('stream-chat');

function requireEnv(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(
      `${name} is not set: run these tests through scripts/sdk-tests.sh, or export ` +
        'GATEWAY_PUBLIC_URL, GATEWAY_ADMIN_URL, GATEWAY_API_KEY and GATEWAY_API_SECRET',
    );
  }
  return value;
}

const env = {
  publicUrl: requireEnv('GATEWAY_PUBLIC_URL').replace(/\/+$/, ''),
  adminUrl: requireEnv('GATEWAY_ADMIN_URL').replace(/\/+$/, ''),
  apiKey: requireEnv('GATEWAY_API_KEY'),
  apiSecret: requireEnv('GATEWAY_API_SECRET'),
  // Server-initiated health check interval the gateway was started with (spec default 30 s).
  healthCheckSecs: Number(process.env.GATEWAY_HEALTH_CHECK_INTERVAL_SECS || '30'),
};

// Generous HTTP timeout: the suite runs on a small, busy machine.
const HTTP_TIMEOUT_MS = 10000;

/** Server-side client on the admin listener, authenticated with the server token. */
function serverClient(secret = env.apiSecret) {
  return new StreamChat(env.apiKey, secret, {
    baseURL: env.adminUrl,
    timeout: HTTP_TIMEOUT_MS,
  });
}

const server = serverClient();

/** Every client made through `userClient` during a test file, so `closeAll` can tidy up. */
const openClients = new Set();

/** Client-side client on the public listener, as a browser or mobile app would make it. */
function userClient(options = {}) {
  const client = new StreamChat(env.apiKey, {
    baseURL: env.publicUrl,
    allowServerSideConnect: true,
    timeout: HTTP_TIMEOUT_MS,
    ...options,
  });
  openClients.add(client);
  return client;
}

async function closeAll() {
  const clients = [...openClients];
  openClients.clear();
  await Promise.all(clients.map((c) => (c.userID ? c.disconnectUser(1000).catch(() => {}) : null)));
}

/** A user id unique to this run, in the id alphabet the spec allows. */
function uid(prefix = 'u') {
  return `${prefix}-${crypto.randomBytes(6).toString('hex')}`;
}

const nowSecs = () => Math.floor(Date.now() / 1000);

/** User token minted by the SDK's own server helper. */
function token(userId, { exp, iat } = {}) {
  return server.createToken(userId, exp, iat);
}

/**
 * connectUser rejects with an Error whose message is a JSON string
 * `{"code":..,"StatusCode":..,"message":..,"isWSFailure":..}`; decode it.
 */
function wsError(err) {
  try {
    return JSON.parse(err.message);
  } catch (_) {
    return { code: err.code, StatusCode: err.StatusCode, message: err.message };
  }
}

/** Await a connect that must be refused; return the decoded error. */
async function connectRefused(promise) {
  let err;
  try {
    await promise;
  } catch (e) {
    err = e;
  }
  assert.ok(err, 'expected the connection to be refused');
  return wsError(err);
}

/** Await a REST call that must fail; return {code, status, message, body}. */
async function apiError(promise) {
  let err;
  try {
    await promise;
  } catch (e) {
    err = e;
  }
  assert.ok(err, 'expected the request to fail');
  assert.ok(err.response, `expected an HTTP error response, got: ${err.message}`);
  return {
    code: err.code,
    status: err.status,
    message: err.response.data && err.response.data.message,
    body: err.response.data,
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Resolve with the first event of `type` (matching `predicate`) that `client` dispatches.
 * Register before triggering the action that causes the event.
 */
function nextEvent(client, type, predicate = () => true, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      sub.unsubscribe();
      reject(new Error(`no ${type} event within ${timeoutMs} ms`));
    }, timeoutMs);
    const sub = client.on(type, (event) => {
      if (!predicate(event)) return;
      clearTimeout(timer);
      sub.unsubscribe();
      resolve(event);
    });
  });
}

/** Poll until `fn` returns a truthy value, or fail after `timeoutMs`. */
async function eventually(fn, { timeoutMs = 5000, intervalMs = 100, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** Poll a task until it leaves pending/running; return its final status. */
async function waitTask(taskId, timeoutMs = 15000) {
  let status;
  await eventually(
    async () => {
      status = await server.getTask(taskId);
      return status.status !== 'pending' && status.status !== 'running';
    },
    { timeoutMs, intervalMs: 200, what: `task ${taskId}` },
  );
  return status;
}

const RFC3339_UTC = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$/;

function assertTimestamp(value, what = 'timestamp') {
  assert.equal(typeof value, 'string', `${what} should be a string, got ${value}`);
  assert.match(value, RFC3339_UTC, `${what} should be RFC 3339 UTC with fraction and Z`);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

module.exports = {
  env,
  server,
  serverClient,
  userClient,
  closeAll,
  uid,
  nowSecs,
  token,
  wsError,
  connectRefused,
  apiError,
  sleep,
  nextEvent,
  eventually,
  waitTask,
  assertTimestamp,
  RFC3339_UTC,
  UUID,
};

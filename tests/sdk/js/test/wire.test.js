'use strict';
// Wire details the SDK relies on but hides (spec §2.2, §3, §4.1), checked with a plain
// WebSocket and fetch so that frame counts, close codes and headers are visible.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const WebSocket = require('ws');
const { env, serverClient, uid, nowSecs, token, assertTimestamp } = require('../lib/gateway');

/** Hand-made JWT, for the token shapes the SDK never produces. */
function jwt(payload, { secret = env.apiSecret, alg = 'HS256' } = {}) {
  const part = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  const signed = `${part({ alg, typ: 'JWT' })}.${part(payload)}`;
  const hash = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' }[alg];
  const signature = hash ? crypto.createHmac(hash, secret).update(signed).digest('base64url') : '';
  return `${signed}.${signature}`;
}

/** The server token, as the SDK's server client signs it. */
const serverToken = () => serverClient().tokenManager.getToken();

function connectUrl({ userId, details, auth = 'jwt', authorization, apiKey = env.apiKey }) {
  const json = { user_id: userId, client_request_id: 'c0ffee00-0000-4000-8000-000000000000' };
  if (details !== undefined) json.user_details = details;
  const params = new URLSearchParams();
  params.set('json', JSON.stringify(json));
  params.set('api_key', apiKey);
  params.set('authorization', authorization ?? '');
  params.set('stream-auth-type', auth);
  params.set('X-Stream-Client', 'chat-gateway-wire-test');
  return `${env.publicUrl.replace(/^http/, 'ws')}/connect?${params}`;
}

/** Open a raw socket that records every text frame and the close. */
function open(url) {
  const ws = new WebSocket(url);
  const frames = [];
  const waiters = [];
  ws.on('message', (data, isBinary) => {
    // Every frame must be JSON text; record anything else so the assertions show it.
    let frame;
    try {
      frame = isBinary ? { unexpected: 'binary frame' } : JSON.parse(data.toString());
    } catch (_) {
      frame = { unexpected: data.toString() };
    }
    frames.push(frame);
    while (waiters.length) waiters.shift()();
  });
  const closed = new Promise((resolve) => {
    ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
  });
  ws.on('error', () => {});
  async function frame(index, timeoutMs = 5000) {
    const deadline = Date.now() + timeoutMs;
    while (frames.length <= index) {
      if (Date.now() > deadline) throw new Error(`no frame #${index} within ${timeoutMs} ms`);
      await new Promise((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, 100);
      });
    }
    return frames[index];
  }
  return { ws, frames, frame, closed };
}

async function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

test('both listeners answer GET /healthz', async () => {
  for (const base of [env.publicUrl, env.adminUrl]) {
    const res = await fetch(`${base}/healthz`);
    assert.equal(res.status, 200, base);
  }
});

test('a refused connect gets exactly one error frame, then close 1000', async () => {
  const id = uid('wire');
  const bad = serverClient('other-secret').createToken(id);
  const sock = open(connectUrl({ userId: id, details: { id }, authorization: bad }));
  const close = await withTimeout(sock.closed, 5000, 'close');
  assert.equal(close.code, 1000);
  assert.equal(sock.frames.length, 1, 'exactly one frame before the close');
  const frame = sock.frames[0];
  assert.equal(frame.type, 'connection.error');
  assert.equal(frame.connection_id, '');
  assertTimestamp(frame.created_at, 'created_at');
  assert.equal(frame.error.code, 43);
  assert.equal(frame.error.StatusCode, 401);
  assert.equal(typeof frame.error.message, 'string');
  assert.ok(Array.isArray(frame.error.details));
});

test('user_details missing is code 4', async () => {
  const id = uid('wire');
  const sock = open(connectUrl({ userId: id, authorization: token(id) }));
  const close = await withTimeout(sock.closed, 5000, 'close');
  assert.equal(close.code, 1000);
  assert.equal(sock.frames.length, 1);
  assert.equal(sock.frames[0].error.code, 4);
  assert.match(sock.frames[0].error.message, /user_details is a required field/);
});

test('a token for another user than user_details is code 5', async () => {
  // The SDK refuses this mismatch itself before connecting, so only a raw socket can send it.
  const id = uid('wire');
  const sock = open(
    connectUrl({ userId: id, details: { id }, authorization: token(uid('other')) }),
  );
  const close = await withTimeout(sock.closed, 5000, 'close');
  assert.equal(close.code, 1000);
  assert.equal(sock.frames.length, 1);
  assert.equal(sock.frames[0].error.code, 5);
  assert.equal(sock.frames[0].error.StatusCode, 401);
});

test('a jwt connect without a token is refused without retry', async () => {
  const id = uid('wire');
  for (const authorization of ['', 'undefined', 'null']) {
    const sock = open(connectUrl({ userId: id, details: { id }, authorization }));
    const close = await withTimeout(sock.closed, 5000, 'close');
    assert.equal(close.code, 1000, `authorization=${JSON.stringify(authorization)}`);
    assert.equal(sock.frames[0].type, 'connection.error');
    assert.equal(sock.frames[0].error.StatusCode, 401);
  }
});

test('health.check pings: JSON array (JS SDK) and bare object (other SDKs)', async () => {
  const id = uid('wire');
  const sock = open(
    connectUrl({ userId: id, details: { id, name: `W ${id}` }, authorization: token(id) }),
  );
  const first = await sock.frame(0);
  assert.equal(first.type, 'health.check');
  assert.equal(first.me.id, id);
  const connectionId = first.connection_id;

  sock.ws.send(JSON.stringify([{ type: 'health.check', client_id: `${id}--abc` }]));
  const reply1 = await sock.frame(1);
  sock.ws.send(JSON.stringify({ type: 'health.check', client_id: `${id}--abc` }));
  const reply2 = await sock.frame(2);
  for (const reply of [reply1, reply2]) {
    assert.equal(reply.type, 'health.check');
    assert.equal(reply.connection_id, connectionId);
    assert.equal(reply.cid, '*');
    assertTimestamp(reply.created_at, 'created_at');
  }
  sock.ws.close(1000);
  await withTimeout(sock.closed, 5000, 'close');
});

test('a client close 1000 is answered with a close frame (clean close)', async () => {
  const id = uid('wire');
  const sock = open(connectUrl({ userId: id, details: { id }, authorization: token(id) }));
  await sock.frame(0);
  sock.ws.close(1000, 'Manually closed connection by calling client.disconnect()');
  const close = await withTimeout(sock.closed, 5000, 'close');
  // 1006 would mean the server dropped the TCP connection without echoing the close frame.
  assert.equal(close.code, 1000);
});

test('anonymous connect with an empty authorization', async () => {
  const anonId = '3f1c2b7e-9a0d-4e5f-8a6b-1c2d3e4f5a6b';
  const sock = open(
    connectUrl({ userId: anonId, details: { id: anonId, anon: true }, auth: 'anonymous' }),
  );
  const first = await sock.frame(0);
  assert.equal(first.type, 'health.check');
  assert.ok(first.me.id.startsWith('!anon'));
  assert.equal(first.me.role, 'anonymous');
  sock.ws.close(1000);
  await withTimeout(sock.closed, 5000, 'close');
});

test('REST errors use the Stream envelope', async () => {
  const res = await fetch(`${env.adminUrl}/users?api_key=${encodeURIComponent(env.apiKey)}`, {
    method: 'POST',
    headers: {
      Authorization: serverToken(),
      'stream-auth-type': 'jwt',
      'Content-Type': 'application/json',
    },
    body: JSON.stringify({ users: { x: { name: 'no id' } } }),
  });
  assert.equal(res.status, 400);
  const body = await res.json();
  assert.equal(body.code, 4);
  assert.equal(body.StatusCode, 400);
  assert.equal(typeof body.message, 'string');
  assert.equal(typeof body.duration, 'string');
  assert.equal(typeof body.more_info, 'string');
  assert.ok(Array.isArray(body.details));
});

test('unknown api key is 401 code 2; user token on the admin listener is refused', async () => {
  const r1 = await fetch(`${env.adminUrl}/app?api_key=nope`, {
    headers: { Authorization: serverToken(), 'stream-auth-type': 'jwt' },
  });
  assert.equal(r1.status, 401);
  assert.equal((await r1.json()).code, 2);

  const id = uid('wire');
  const r2 = await fetch(`${env.adminUrl}/app?api_key=${encodeURIComponent(env.apiKey)}`, {
    headers: { Authorization: token(id), 'stream-auth-type': 'jwt' },
  });
  assert.equal(r2.status, 401);
  assert.equal((await r2.json()).code, 5);
});

test('client REST with a user_id other than the token user is code 5', async () => {
  const id = uid('wire');
  const payload = encodeURIComponent(JSON.stringify({ filter_conditions: { id } }));
  const url =
    `${env.publicUrl}/users?api_key=${encodeURIComponent(env.apiKey)}` +
    `&user_id=${uid('someone')}&payload=${payload}`;
  const res = await fetch(url, {
    headers: { Authorization: token(id), 'stream-auth-type': 'jwt' },
  });
  assert.equal(res.status, 401);
  assert.equal((await res.json()).code, 5);
});

test('GET /app is exactly {"app":...,"duration":...} with rate-limit headers', async () => {
  const res = await fetch(`${env.adminUrl}/app?api_key=${encodeURIComponent(env.apiKey)}`, {
    headers: {
      Authorization: serverToken(),
      'stream-auth-type': 'jwt',
      'Content-Type': 'application/json',
    },
  });
  assert.equal(res.status, 200);
  const text = await res.text();
  assert.ok(text.trimStart().startsWith('{"app":'), 'app is the first key');
  assert.deepEqual(Object.keys(JSON.parse(text)), ['app', 'duration']);
  const limit = Number(res.headers.get('x-ratelimit-limit'));
  const remaining = Number(res.headers.get('x-ratelimit-remaining'));
  const reset = Number(res.headers.get('x-ratelimit-reset'));
  assert.ok(limit > 0);
  assert.ok(remaining >= 0 && remaining <= limit);
  assert.ok(Math.abs(reset - Date.now() / 1000) < 3600, 'reset is in unix seconds');
});

test('the public listener answers CORS preflight for the SDK headers', async () => {
  const res = await fetch(`${env.publicUrl}/users`, {
    method: 'OPTIONS',
    headers: {
      Origin: 'http://127.0.0.1:9',
      'Access-Control-Request-Method': 'PATCH',
      'Access-Control-Request-Headers':
        'authorization,content-type,stream-auth-type,x-client-request-id,x-stream-client',
    },
  });
  assert.ok(res.status >= 200 && res.status < 300, `preflight status ${res.status}`);
  const origin = res.headers.get('access-control-allow-origin');
  assert.ok(origin === '*' || origin === 'http://127.0.0.1:9', `allow-origin ${origin}`);
});

/** Connect a raw socket with `authorization` and return the single error frame's code. */
async function refusedCode(userId, authorization) {
  const sock = open(connectUrl({ userId, details: { id: userId }, authorization }));
  const close = await withTimeout(sock.closed, 5000, 'close');
  assert.equal(close.code, 1000);
  assert.equal(sock.frames.length, 1);
  assert.equal(sock.frames[0].type, 'connection.error');
  assert.equal(sock.frames[0].error.StatusCode, 401);
  return sock.frames[0].error.code;
}

test('token validation outcomes on /connect', async () => {
  const id = uid('jwt');
  const now = nowSecs();
  assert.equal(await refusedCode(id, jwt({ user_id: id, nbf: now + 3600 })), 41, 'nbf future');
  assert.equal(await refusedCode(id, jwt({ user_id: id, iat: now + 3600 })), 42, 'iat future');
  assert.equal(await refusedCode(id, jwt({ user_id: id, exp: now - 10 })), 40, 'exp past');
  assert.equal(await refusedCode(id, jwt({ user_id: id }, { secret: 'x'.repeat(32) })), 43);
  assert.equal(await refusedCode(id, jwt({ user_id: id }, { alg: 'HS512' })), 5, 'HS512');
  assert.equal(await refusedCode(id, jwt({ user_id: id }, { alg: 'none' })), 5, 'alg none');
  assert.equal(await refusedCode(id, jwt({ user_id: 42 })), 5, 'numeric user_id');
  assert.equal(await refusedCode(id, jwt({ user_id: id, exp: String(now + 60) })), 5, 'exp type');
  assert.equal(await refusedCode(id, 'not-a-jwt'), 5, 'malformed');

  // Extra claims are fine, and so is a token that is valid in every respect.
  const ok = open(
    connectUrl({
      userId: id,
      details: { id },
      authorization: jwt({ user_id: id, iat: now - 5, nbf: now - 5, exp: now + 60, x: 1 }),
    }),
  );
  assert.equal((await ok.frame(0)).type, 'health.check');
  ok.ws.close(1000);
  await withTimeout(ok.closed, 5000, 'close');
});

test('REST: missing stream-auth-type is code 5', async () => {
  const res = await fetch(`${env.adminUrl}/app?api_key=${encodeURIComponent(env.apiKey)}`, {
    headers: { Authorization: serverToken() },
  });
  assert.equal(res.status, 401);
  assert.equal((await res.json()).code, 5);
});

test('REST: a body over the limit is 413 code 22', async () => {
  const res = await fetch(`${env.adminUrl}/users?api_key=${encodeURIComponent(env.apiKey)}`, {
    method: 'POST',
    headers: {
      Authorization: serverToken(),
      'stream-auth-type': 'jwt',
      'Content-Type': 'application/json',
    },
    body: JSON.stringify({ users: { big: { id: 'big', blob: 'x'.repeat(2 * 1024 * 1024) } } }),
  });
  assert.equal(res.status, 413);
  assert.equal((await res.json()).code, 22);
});

test('REST: an oversized header section is 431 code 24', async () => {
  // 40 KiB of headers: far above the documented 16 KiB default, below any HTTP library cap.
  const pad = 'x'.repeat(40 * 1024);
  for (const base of [env.adminUrl, env.publicUrl]) {
    const res = await fetch(`${base}/app?api_key=${encodeURIComponent(env.apiKey)}`, {
      headers: { Authorization: serverToken(), 'stream-auth-type': 'jwt', 'x-pad': pad },
    });
    assert.equal(res.status, 431, base);
    assert.equal((await res.json()).code, 24, base);
  }
});

test('connections per user are capped (code 71, close 1000)', async () => {
  const max = Number(process.env.GATEWAY_MAX_CONNECTIONS_PER_USER || '50');
  const id = uid('cap');
  const url = connectUrl({ userId: id, details: { id }, authorization: token(id) });
  const socks = [];
  try {
    for (let i = 0; i < max; i += 1) {
      const sock = open(url);
      socks.push(sock);
      assert.equal((await sock.frame(0)).type, 'health.check', `connection ${i + 1}`);
    }
    const over = open(url);
    socks.push(over);
    const close = await withTimeout(over.closed, 5000, 'close');
    assert.equal(close.code, 1000);
    assert.equal(over.frames.length, 1);
    assert.equal(over.frames[0].type, 'connection.error');
    assert.equal(over.frames[0].error.code, 71);

    // Closing one frees a slot.
    socks[0].ws.close(1000);
    await withTimeout(socks[0].closed, 5000, 'close');
    let again;
    for (let attempt = 0; attempt < 20; attempt += 1) {
      again = open(url);
      socks.push(again);
      const first = await again.frame(0);
      if (first.type === 'health.check') break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(again.frames[0].type, 'health.check');
  } finally {
    for (const sock of socks) sock.ws.terminate();
  }
});

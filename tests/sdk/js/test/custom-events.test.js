'use strict';
// Custom user events (sendUserCustomEvent): a back end pushes its own event to every live
// connection of one user; Stream's own types, oversized events, unknown users and clients
// are refused in Stream's envelope.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const {
  server,
  userClient,
  closeAll,
  uid,
  token,
  apiError,
  sleep,
  nextEvent,
  assertTimestamp,
} = require('../lib/gateway');

after(closeAll);

async function connected(id) {
  const client = userClient();
  await client.connectUser({ id, name: `User ${id}` }, token(id));
  return client;
}

test('sendUserCustomEvent reaches every connection of the user, and only them', async () => {
  const id = uid('friend');
  const [phone, laptop] = [await connected(id), await connected(id)];
  const bystander = await connected(uid('bystander'));
  const stray = [];
  bystander.on('friendship_request', (e) => stray.push(e));

  const isOurs = (e) => e.text === `hello ${id}`;
  const arrivals = [phone, laptop].map((c) => nextEvent(c, 'friendship_request', isOurs));
  const res = await server.sendUserCustomEvent(id, {
    type: 'friendship_request',
    text: `hello ${id}`,
    from: { id: 'tommaso', mutual: ['a', 'b'] },
  });
  assert.equal(typeof res.duration, 'string');
  for (const event of await Promise.all(arrivals)) {
    assert.equal(event.type, 'friendship_request');
    assert.deepEqual(event.from, { id: 'tommaso', mutual: ['a', 'b'] });
    assertTimestamp(event.created_at, 'event created_at');
  }
  await sleep(300);
  assert.deepEqual(stray, [], 'another user received the event');
});

test("Stream's own event types are refused (4)", async () => {
  const id = uid('reserved');
  await server.upsertUser({ id });
  for (const type of ['user.updated', 'message.new', 'notification.mutes_updated', 'a.b']) {
    const err = await apiError(server.sendUserCustomEvent(id, { type, text: 'x' }));
    assert.equal(err.code, 4, type);
    assert.equal(err.status, 400);
    assert.match(err.message, /^SendUserCustomEvent failed with error: /);
  }
  const err = await apiError(server.sendUserCustomEvent(id, { text: 'no type' }));
  assert.equal(err.code, 4);
});

test('an event over 5 KB is refused (22); one under it is delivered', async () => {
  const id = uid('big');
  const client = await connected(id);
  const err = await apiError(
    server.sendUserCustomEvent(id, { type: 'blob', data: 'x'.repeat(5 * 1024) }),
  );
  assert.equal(err.code, 22);
  assert.equal(err.status, 413);
  const arrived = nextEvent(client, 'blob');
  await server.sendUserCustomEvent(id, { type: 'blob', data: 'y'.repeat(5000) });
  assert.equal((await arrived).data.length, 5000);
});

test('an unknown user is 16', async () => {
  const err = await apiError(server.sendUserCustomEvent(uid('nobody'), { type: 'poke' }));
  assert.equal(err.code, 16);
  assert.equal(err.status, 404);
});

test('a client may not send custom events, to others or to itself (17)', async () => {
  const me = uid('me');
  const you = uid('you');
  const client = await connected(me);
  const target = await connected(you);
  const stray = [];
  target.on('poke', (e) => stray.push(e));
  for (const to of [you, me]) {
    const err = await apiError(client.sendUserCustomEvent(to, { type: 'poke' }));
    assert.equal(err.code, 17, to);
    assert.equal(err.status, 403);
  }
  await sleep(300);
  assert.deepEqual(stray, []);
});

'use strict';
// Bans through the SDK: banUser with a reason and a short timeout, shadowBan and
// removeShadowBan, unbanUser, queryBannedUsers; `banned` / `shadow_banned` on the user and in
// queries; user.banned / user.unbanned on the banned user's sockets; refusals.

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
} = require('../lib/gateway');

after(closeAll);

async function connected(id) {
  const client = userClient();
  await client.connectUser({ id }, token(id));
  return client;
}

test('banUser with a timeout: the event, banned in me and in queries, until it ends', async () => {
  const target = uid('target');
  const moderator = uid('mod');
  await server.upsertUser({ id: moderator });
  const client = await connected(target);
  const banned = nextEvent(client, 'user.banned');
  // 0.03 minutes: 1.8 seconds.
  await server.banUser(target, { reason: 'spam', timeout: 0.03, banned_by_id: moderator });
  const event = await banned;
  assert.equal(event.user.id, target);
  assert.equal(event.reason, 'spam');

  const again = await connected(target);
  assert.equal(again.user.banned, true);
  let { users } = await server.queryUsers({ id: target, banned: true });
  assert.equal(users.length, 1);
  const { bans } = await server.queryBannedUsers({ user_id: target });
  assert.equal(bans.length, 1);
  assert.equal(bans[0].reason, 'spam');
  assert.equal(bans[0].banned_by.id, moderator);

  await sleep(2500);
  ({ users } = await server.queryUsers({ id: target, banned: false }));
  assert.equal(users.length, 1, 'the ban ended');
  assert.equal((await server.queryBannedUsers({ user_id: target })).bans.length, 0);
});

test('shadowBan is told to no client; removeShadowBan lifts it', async () => {
  const target = uid('shadowed');
  const client = await connected(target);
  const stray = [];
  client.on('user.banned', (e) => stray.push(e));
  await server.shadowBan(target);
  let { users } = await server.queryUsers({ id: target, shadow_banned: true });
  assert.equal(users.length, 1);
  assert.equal(users[0].banned, false);
  await sleep(300);
  assert.deepEqual(stray, [], 'a shadow ban was told to its user');
  await server.removeShadowBan(target);
  ({ users } = await server.queryUsers({ id: target, shadow_banned: true }));
  assert.equal(users.length, 0);
});

test('unbanUser reaches the user as user.unbanned', async () => {
  const target = uid('target');
  const client = await connected(target);
  await server.banUser(target, { reason: 'flood' });
  const unbanned = nextEvent(client, 'user.unbanned');
  await server.unbanUser(target);
  const event = await unbanned;
  assert.equal(event.user.banned, false);
});

test('ban refusals: no target (4), unknown user (16), a client without the admin role (17)', async () => {
  let err = await apiError(server.banUser(''));
  assert.equal(err.code, 4);
  assert.match(err.message, /^BanUser failed with error: /);
  err = await apiError(server.banUser(uid('nobody')));
  assert.equal(err.code, 16);
  const target = uid('target');
  await server.upsertUser({ id: target });
  const plain = await connected(uid('plain'));
  err = await apiError(plain.banUser(target));
  assert.equal(err.code, 17);
  err = await apiError(plain.queryBannedUsers({}));
  assert.equal(err.code, 17);
});

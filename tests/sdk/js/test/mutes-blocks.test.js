'use strict';
// Mutes and blocks through the SDK: a client mutes and blocks for itself (never for others),
// a back end for the user it names; the SDK's own state (mutedUsers, blockedUsers) follows
// `me` on connect and notification.mutes_updated; a short timeout ends a mute.

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
  await client.connectUser({ id }, token(id));
  return client;
}

test('muteUser: in me, announced with notification.mutes_updated, undone by unmuteUser', async () => {
  const me = uid('me');
  const bore = uid('bore');
  await server.upsertUser({ id: bore, name: `Bore ${bore}` });
  const client = await connected(me);
  assert.equal(client.userMuteStatus(bore), false);

  const announced = nextEvent(client, 'notification.mutes_updated');
  const res = await client.muteUser(bore);
  assert.equal(res.mute.user.id, me);
  assert.equal(res.mute.target.id, bore);
  assert.equal(res.mute.target.name, `Bore ${bore}`);
  assertTimestamp(res.mute.created_at, 'mute.created_at');
  assert.equal(res.own_user.mutes.length, 1);
  const event = await announced;
  assert.equal(event.me.mutes[0].target.id, bore);
  assert.equal(client.userMuteStatus(bore), true, 'the SDK took the mutes of the event');

  // Another connection of the same user gets the mute in its me.
  const laptop = await connected(me);
  assert.equal(laptop.userMuteStatus(bore), true);

  const lifted = nextEvent(client, 'notification.mutes_updated', (e) => e.me.mutes.length === 0);
  await client.unmuteUser(bore);
  await lifted;
  assert.equal(client.userMuteStatus(bore), false);
});

test('a mute with a short timeout ends by itself', async () => {
  const me = uid('me');
  const noisy = uid('noisy');
  await server.upsertUsers([{ id: me }, { id: noisy }]);
  // 0.03 minutes: 1.8 seconds.
  const res = await server.muteUser(noisy, me, { timeout: 0.03 });
  assertTimestamp(res.mute.expires, 'mute.expires');
  const before = await connected(me);
  assert.equal(before.userMuteStatus(noisy), true);
  await sleep(2500);
  const later = await connected(me);
  assert.equal(later.userMuteStatus(noisy), false, 'the mute expired');
});

test('mute refusals: for another user (17), oneself (4), an unknown user (16)', async () => {
  const me = uid('me');
  const other = uid('other');
  const bore = uid('bore');
  await server.upsertUsers([{ id: other }, { id: bore }]);
  const client = await connected(me);
  let err = await apiError(client.muteUser(bore, other));
  assert.equal(err.code, 17);
  assert.equal(err.status, 403);
  err = await apiError(client.muteUser(me));
  assert.equal(err.code, 4);
  assert.match(err.message, /^MuteUser failed with error: /);
  err = await apiError(client.muteUser(uid('nobody')));
  assert.equal(err.code, 16);
  err = await apiError(client.unmuteUser(bore, other));
  assert.equal(err.code, 17);
  err = await apiError(server.muteUser(bore));
  assert.equal(err.code, 4, 'a back end must name the muting user');
});

test('blockUser, getBlockedUsers and unBlockUser', async () => {
  const me = uid('me');
  const troll = uid('troll');
  await server.upsertUser({ id: troll });
  const client = await connected(me);
  assert.deepEqual(client.blockedUsers.getLatestValue().userIds, []);

  const res = await client.blockUser(troll);
  assert.equal(res.blocked_by_user_id, me);
  assert.equal(res.blocked_user_id, troll);
  assertTimestamp(res.blocked_at, 'blocked_at');
  const { blocks } = await client.getBlockedUsers();
  assert.equal(blocks.length, 1);
  assert.equal(blocks[0].user_id, me);
  assert.equal(blocks[0].blocked_user_id, troll);
  assert.equal(blocks[0].blocked_user.id, troll);
  assertTimestamp(blocks[0].created_at, 'block created_at');

  const laptop = await connected(me);
  assert.deepEqual(laptop.blockedUsers.getLatestValue().userIds, [troll]);

  // The back end sees and lifts the block for the user.
  const listed = await server.getBlockedUsers(me);
  assert.equal(listed.blocks[0].blocked_user_id, troll);
  await server.unBlockUser(troll, me);
  assert.deepEqual((await client.getBlockedUsers()).blocks, []);
});

test('block refusals: for another user (17), oneself (4), an unknown user (16)', async () => {
  const me = uid('me');
  const other = uid('other');
  const troll = uid('troll');
  await server.upsertUsers([{ id: other }, { id: troll }]);
  const client = await connected(me);
  let err = await apiError(client.blockUser(troll, other));
  assert.equal(err.code, 17);
  // The SDK sends this user_id in the query, where it must name the token's user (5).
  err = await apiError(client.getBlockedUsers(other));
  assert.equal(err.code, 5);
  err = await apiError(client.blockUser(me));
  assert.equal(err.code, 4);
  err = await apiError(client.blockUser(uid('nobody')));
  assert.equal(err.code, 16);
});

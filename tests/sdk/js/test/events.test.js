'use strict';
// Events pushed to client connections (spec §3.5, §6): user.updated, presence, and the
// writes that end a user's live connections without making the SDK reconnect.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const {
  server,
  userClient,
  closeAll,
  uid,
  nowSecs,
  token,
  connectRefused,
  sleep,
  nextEvent,
  eventually,
  assertTimestamp,
} = require('../lib/gateway');

after(closeAll);

/**
 * Watch the live socket of `client`: resolves `closed` with the close code and reason the
 * server sent, and counts reconnect attempts the SDK makes afterwards.
 */
function watchSocket(client) {
  const conn = client.wsConnection;
  const ws = conn.ws;
  let attempts = 0;
  const connect = conn._connect.bind(conn);
  conn._connect = (...args) => {
    attempts += 1;
    return connect(...args);
  };
  const closed = new Promise((resolve) => {
    ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
  });
  return { closed, reconnectAttempts: () => attempts };
}

/** The server ended the connection for good: close 1000 + JSON reason, and no reconnect. */
async function assertEndedForGood(watch) {
  const close = await Promise.race([
    watch.closed,
    sleep(5000).then(() => {
      throw new Error('the server did not close the connection');
    }),
  ]);
  assert.equal(close.code, 1000, 'close code 1000 tells the SDK not to retry');
  let reason;
  assert.doesNotThrow(
    () => {
      reason = JSON.parse(close.reason);
    },
    `close reason should be JSON, got ${JSON.stringify(close.reason)}`,
  );
  assert.equal(typeof reason.code, 'number');
  assert.equal(typeof reason.message, 'string');
  assert.ok(Buffer.byteLength(close.reason) <= 123, 'a close reason fits in 123 bytes');
  // The SDK's first retry would come within 0.25-2.5 s; wait past that.
  await sleep(3000);
  assert.equal(watch.reconnectAttempts(), 0, 'the SDK must not start a reconnect loop');
  return { close, reason };
}

async function storedUser(id) {
  const { users } = await server.queryUsers({ id }, [], { include_deactivated_users: true });
  return users[0];
}

test('server-side partialUpdateUser reaches the client as user.updated', async () => {
  const id = uid('upd');
  const client = userClient();
  await client.connectUser({ id, name: `Before ${id}`, favorite_color: 'green' }, token(id));

  const updated = nextEvent(client, 'user.updated', (e) => e.user && e.user.id === id);
  await server.partialUpdateUser({ id, set: { name: `After ${id}`, 'prefs.theme': 'dark' } });
  const event = await updated;

  assert.equal(event.type, 'user.updated');
  assertTimestamp(event.created_at, 'event created_at');
  assert.equal(event.user.name, `After ${id}`);
  assert.deepEqual(event.user.prefs, { theme: 'dark' });
  assert.equal(event.user.favorite_color, 'green', 'the event carries the whole user');
  assert.equal(event.user.role, 'user');
  assertTimestamp(event.user.updated_at, 'user.updated_at');
  // The SDK merged the event into its own user.
  assert.equal(client.user.name, `After ${id}`);
  assert.equal(client.user.favorite_color, 'green');
});

test('server-side upsert reaches the client as user.updated', async () => {
  const id = uid('upd2');
  const client = userClient();
  await client.connectUser({ id, name: `Before ${id}` }, token(id));

  const updated = nextEvent(client, 'user.updated', (e) => e.user && e.user.id === id);
  await server.upsertUser({ id, name: `Upserted ${id}`, level: 7 });
  const event = await updated;
  assert.equal(event.user.name, `Upserted ${id}`);
  assert.equal(event.user.level, 7);
});

test('presence: a client that queried with presence gets user.presence.changed', async () => {
  const watched = uid('watched');
  await server.upsertUser({ id: watched, name: `Watched ${watched}` });

  const watcherId = uid('watcher');
  const watcher = userClient();
  await watcher.connectUser({ id: watcherId }, token(watcherId));
  const { users } = await watcher.queryUsers({ id: { $in: [watched] } }, [], { presence: true });
  assert.equal(users.length, 1);
  assert.equal(users[0].online, false);

  // A connection that did not ask for presence must not get these events.
  const bystanderId = uid('bystander');
  const bystander = userClient();
  await bystander.connectUser({ id: bystanderId }, token(bystanderId));
  const stray = [];
  bystander.on('user.presence.changed', (e) => stray.push(e));

  const online = nextEvent(
    watcher,
    'user.presence.changed',
    (e) => e.user.id === watched && e.user.online === true,
  );
  const target = userClient();
  await target.connectUser({ id: watched }, token(watched));
  const up = await online;
  assertTimestamp(up.created_at, 'event created_at');
  assertTimestamp(up.user.last_active, 'user.last_active');
  // The SDK keeps its user cache in step with presence events.
  assert.equal(watcher.state.users[watched].online, true);

  const offline = nextEvent(
    watcher,
    'user.presence.changed',
    (e) => e.user.id === watched && e.user.online === false,
  );
  await target.disconnectUser();
  const down = await offline;
  assertTimestamp(down.user.last_active, 'user.last_active');

  await sleep(300);
  assert.deepEqual(
    stray.filter((e) => e.user && e.user.id === watched),
    [],
    'presence goes only to connections that asked for it',
  );
});

test('presence: online while any connection is open, offline after the last', async () => {
  const id = uid('two');
  const a = userClient();
  const b = userClient();
  await a.connectUser({ id }, token(id));
  await b.connectUser({ id }, token(id));
  await a.disconnectUser();
  await sleep(300);
  assert.equal((await storedUser(id)).online, true, 'one connection is still open');
  await b.disconnectUser();
  await eventually(async () => (await storedUser(id)).online === false, {
    what: 'offline after the last connection',
  });
});

test('presence: an invisible user looks offline to others and hides its flag', async () => {
  const hidden = uid('hidden');
  await server.upsertUser({ id: hidden, invisible: true });
  const target = userClient();
  await target.connectUser({ id: hidden }, token(hidden));

  const viewerId = uid('viewer');
  const viewer = userClient();
  await viewer.connectUser({ id: viewerId }, token(viewerId));
  const { users } = await viewer.queryUsers({ id: hidden }, [], { presence: true });
  assert.equal(users.length, 1);
  assert.equal(users[0].online, false);
  assert.equal(users[0].invisible, undefined, "another user's invisible flag is not shown");
});

test('deactivateUser sends user.deactivated and ends the connection for good', async () => {
  const adminId = uid('admin');
  await server.upsertUser({ id: adminId, role: 'admin' });
  const id = uid('deact');
  const client = userClient();
  await client.connectUser({ id, name: `D ${id}` }, token(id));
  const watch = watchSocket(client);

  const deactivated = nextEvent(client, 'user.deactivated');
  const res = await server.deactivateUser(id, { created_by_id: adminId });
  assertTimestamp(res.user.deactivated_at, 'deactivated_at');
  const event = await deactivated;
  assert.equal(event.user.id, id);
  assert.equal(event.created_by.id, adminId);
  await assertEndedForGood(watch);

  assert.equal((await storedUser(id)).online, false);
  const again = await connectRefused(userClient().connectUser({ id }, token(id)));
  assert.equal(again.isWSFailure, false, 'a deactivated user is refused, not retried');
  assert.equal(typeof again.code, 'number');
});

test('deleteUser sends user.deleted and ends the connection for good', async () => {
  const id = uid('del');
  const client = userClient();
  await client.connectUser({ id, name: `X ${id}` }, token(id));
  const watch = watchSocket(client);

  const deleted = nextEvent(client, 'user.deleted');
  await server.deleteUser(id);
  const event = await deleted;
  assert.equal(event.user.id, id);
  assertTimestamp(event.user.deleted_at, 'deleted_at');
  assert.equal(event.hard_delete, false);
  assert.equal(event.mark_messages_deleted, false);
  await assertEndedForGood(watch);

  const again = await connectRefused(userClient().connectUser({ id }, token(id)));
  assert.equal(again.isWSFailure, false);
  assert.equal(again.code, 16, 'a deleted user cannot connect (16)');
});

test('revokeUserToken ends the connection with code 40 and no reconnect', async () => {
  const id = uid('revoke');
  const oldToken = token(id, { iat: nowSecs() - 10 });
  const client = userClient();
  await client.connectUser({ id }, oldToken);
  const watch = watchSocket(client);

  const errorFrame = nextEvent(client, 'connection.error');
  await server.revokeUserToken(id);
  const frame = await errorFrame;
  assert.equal(frame.error.code, 40);
  assert.equal(frame.error.StatusCode, 401);
  const { reason } = await assertEndedForGood(watch);
  assert.equal(reason.code, 40);

  const stale = await connectRefused(userClient().connectUser({ id }, oldToken));
  assert.equal(stale.code, 40);
  const noIat = await connectRefused(userClient().connectUser({ id }, token(id)));
  assert.equal(noIat.code, 40, 'a user-level revocation also revokes tokens without iat');

  await sleep(1100);
  const fresh = await userClient().connectUser({ id }, token(id, { iat: nowSecs() }));
  assert.equal(fresh.me.id, id, 'a token issued after the revocation works');

  await server.revokeUserToken(id, null);
  await eventually(
    async () => {
      try {
        await userClient().connectUser({ id }, oldToken);
        return true;
      } catch (_) {
        return false;
      }
    },
    { what: 'old token accepted again after revocation lifted' },
  );
});

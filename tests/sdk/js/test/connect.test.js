'use strict';
// Client side of the handshake (spec §3, §5.2): connectUser, merge semantics, refusals,
// anonymous and guest users, token providers, health checks, disconnect.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const {
  env,
  server,
  serverClient,
  userClient,
  closeAll,
  uid,
  nowSecs,
  token,
  connectRefused,
  apiError,
  sleep,
  nextEvent,
  eventually,
  assertTimestamp,
} = require('../lib/gateway');

after(closeAll);

async function storedUser(id) {
  const { users } = await server.queryUsers({ id }, [], { include_deactivated_users: true });
  return users[0];
}

test('connectUser resolves with the first health.check carrying a full me', async () => {
  const id = uid('alice');
  const client = userClient();
  const res = await client.connectUser(
    { id, name: `Alice ${id}`, image: 'http://x/y.png', favorite_color: 'green' },
    token(id),
  );

  assert.equal(res.type, 'health.check');
  assert.equal(typeof res.connection_id, 'string');
  assert.ok(res.connection_id.length > 0, 'connection_id must be server-generated');
  assert.equal(res.cid, '*');
  assertTimestamp(res.created_at, 'health.check created_at');
  assert.equal(client._getConnectionID(), res.connection_id);

  const me = res.me;
  assert.equal(me.id, id);
  assert.equal(me.role, 'user');
  assert.deepEqual(me.teams, []);
  assert.equal(me.name, `Alice ${id}`, 'a space in the name survives the form-encoded query');
  assert.equal(me.image, 'http://x/y.png');
  assert.equal(me.favorite_color, 'green', 'custom fields sit flat on me');
  assert.equal(me.custom, undefined);
  assert.equal(me.online, true);
  assert.equal(me.banned, false);
  assert.equal(me.invisible, false);
  for (const key of ['devices', 'mutes', 'channel_mutes', 'blocked_user_ids']) {
    assert.ok(Array.isArray(me[key]), `me.${key} must be an array`);
  }
  for (const key of ['unread_count', 'total_unread_count', 'unread_channels', 'unread_threads']) {
    assert.equal(me[key], 0, `me.${key}`);
  }
  for (const key of ['created_at', 'updated_at', 'last_active']) {
    assertTimestamp(me[key], `me.${key}`);
  }

  // The SDK adopted the frame: its own view of the user and mutes come from `me`.
  assert.equal(client.user.favorite_color, 'green');
  assert.ok(Array.isArray(client.mutedUsers));
  assert.ok(Array.isArray(client.mutedChannels));

  // The connect created the user, and the admin side sees it online.
  const stored = await storedUser(id);
  assert.equal(stored.favorite_color, 'green');
  assert.equal(stored.role, 'user');
  assert.equal(stored.online, true);
});

test('connectUser merges user_details and writes nothing when nothing changes', async () => {
  const id = uid('merge');
  const client = userClient();

  const first = await client.connectUser(
    { id, name: `M ${id}`, favorite_color: 'green' },
    token(id),
  );
  await client.disconnectUser();

  // Second connect adds a field and leaves the first one out: nothing is removed.
  await sleep(20);
  const second = await client.connectUser({ id, name: `M ${id}`, mood: 'happy' }, token(id));
  assert.equal(second.me.favorite_color, 'green', 'missing keys are kept');
  assert.equal(second.me.mood, 'happy', 'new keys are added');
  assert.equal(second.me.created_at, first.me.created_at);
  assert.ok(Date.parse(second.me.updated_at) > Date.parse(first.me.updated_at));
  await client.disconnectUser();

  // Third connect repeats known values only: updated_at must not move.
  await sleep(20);
  const third = await client.connectUser({ id, name: `M ${id}`, mood: 'happy' }, token(id));
  assert.equal(third.me.updated_at, second.me.updated_at, 'a no-op connect writes nothing');
  assert.equal(third.me.favorite_color, 'green');

  // Overwriting a key is a change.
  await client.disconnectUser();
  const fourth = await client.connectUser({ id, mood: 'calm' }, token(id));
  assert.equal(fourth.me.mood, 'calm');
  assert.equal(fourth.me.name, `M ${id}`);
  assert.notEqual(fourth.me.updated_at, third.me.updated_at);
});

test('a connect that changes the user sends user.updated to its other connections', async () => {
  const id = uid('multi');
  const first = userClient();
  await first.connectUser({ id, name: `Multi ${id}` }, token(id));

  const updated = nextEvent(first, 'user.updated', (e) => e.user && e.user.id === id);
  const second = userClient();
  await second.connectUser({ id, name: `Multi ${id}`, shoe_size: 43 }, token(id));
  const event = await updated;
  assert.notEqual(second._getConnectionID(), first._getConnectionID());
  assert.equal(event.user.shoe_size, 43);
  assert.equal(event.user.name, `Multi ${id}`);
  assertTimestamp(event.created_at, 'event created_at');
});

test('refused: token signed with another secret is code 43', async () => {
  const id = uid('sig');
  const badToken = serverClient('not-the-secret').createToken(id);
  const err = await connectRefused(userClient().connectUser({ id }, badToken));
  assert.equal(err.code, 43);
  assert.equal(err.StatusCode, 401);
  assert.equal(err.isWSFailure, false, 'a refusal must not look like a network failure');
});

test('refused: expired token is code 40', async () => {
  const id = uid('exp');
  const err = await connectRefused(
    userClient().connectUser({ id }, token(id, { exp: nowSecs() - 60 })),
  );
  assert.equal(err.code, 40);
  assert.equal(err.StatusCode, 401);
});

test('refused: iat in the future is code 42', async () => {
  const id = uid('iat');
  const err = await connectRefused(
    userClient().connectUser({ id }, token(id, { iat: nowSecs() + 3600 })),
  );
  assert.equal(err.code, 42);
  assert.equal(err.StatusCode, 401);
});

test('refused: unknown api key is code 2', async () => {
  const id = uid('key');
  const client = new (require('stream-chat').StreamChat)('no-such-key', {
    baseURL: env.publicUrl,
    allowServerSideConnect: true,
  });
  try {
    const err = await connectRefused(client.connectUser({ id }, token(id)));
    assert.equal(err.code, 2);
    assert.equal(err.StatusCode, 401);
  } finally {
    await client.disconnectUser(500).catch(() => {});
  }
});

test('refused: role change at connect is code 17, same role is accepted', async () => {
  const id = uid('role');
  await server.upsertUser({ id, name: `R ${id}` });

  const err = await connectRefused(userClient().connectUser({ id, role: 'admin' }, token(id)));
  assert.equal(err.code, 17);
  assert.equal(err.StatusCode, 403);
  assert.match(err.message, /UpdateUserRole/);
  assert.equal((await storedUser(id)).role, 'user', 'the refusal changed nothing');

  const same = await userClient().connectUser({ id, role: 'user' }, token(id));
  assert.equal(same.me.role, 'user');

  const fresh = uid('role-new');
  const errNew = await connectRefused(
    userClient().connectUser({ id: fresh, role: 'admin' }, token(fresh)),
  );
  assert.equal(errNew.code, 17, 'a new user may not pick a non-default role');
});

test('refused: teams change at connect is code 17, same set is accepted', async () => {
  const id = uid('teams');
  await server.upsertUser({ id, teams: ['red', 'blue'] });

  const same = userClient();
  const ok = await same.connectUser({ id, teams: ['blue', 'red'] }, token(id));
  assert.deepEqual([...ok.me.teams].sort(), ['blue', 'red'], 'teams compare as sets');
  await same.disconnectUser();

  const err = await connectRefused(userClient().connectUser({ id, teams: ['green'] }, token(id)));
  assert.equal(err.code, 17);
  assert.equal(err.StatusCode, 403);
  assert.deepEqual([...(await storedUser(id)).teams].sort(), ['blue', 'red']);

  const fresh = uid('teams-new');
  const errNew = await connectRefused(
    userClient().connectUser({ id: fresh, teams: ['red'] }, token(fresh)),
  );
  assert.equal(errNew.code, 17, 'a new user may not bring teams');
});

test('refused: a server-owned field with a different value is code 4', async () => {
  const id = uid('owned');
  const err = await connectRefused(userClient().connectUser({ id, banned: true }, token(id)));
  assert.equal(err.code, 4);
});

test('connectAnonymousUser gets an !anon id and role anonymous, may read, may not write', async () => {
  const client = userClient();
  const res = await client.connectAnonymousUser();
  assert.equal(res.type, 'health.check');
  assert.ok(res.connection_id);
  assert.ok(res.me.id.startsWith('!anon'), `anonymous id ${res.me.id}`);
  assert.equal(res.me.role, 'anonymous');
  assert.ok(Array.isArray(res.me.mutes));

  const visible = uid('seen');
  await server.upsertUser({ id: visible, name: `Seen ${visible}` });
  const { users } = await client.queryUsers({ id: visible });
  assert.equal(users.length, 1);
  assert.equal(users[0].name, `Seen ${visible}`);

  const err = await apiError(client.partialUpdateUser({ id: res.me.id, set: { name: 'x' } }));
  assert.equal(err.code, 17);
  assert.equal(err.status, 403);

  // Anonymous users are not stored.
  const { users: stored } = await server.queryUsers({ id: res.me.id });
  assert.equal(stored.length, 0);
});

test('setGuestUser creates a guest and connects it', async () => {
  const id = uid('guest');
  const client = userClient();
  const res = await client.setGuestUser({ id, name: `Guesty ${id}` });
  assert.equal(res.type, 'health.check');
  assert.equal(res.me.id, id);
  assert.equal(res.me.role, 'guest');
  assert.equal(res.me.name, `Guesty ${id}`);

  const stored = await storedUser(id);
  assert.equal(stored.role, 'guest');
  assert.equal(stored.online, true);
});

test('setGuestUser for the id of an existing regular user is refused with code 4', async () => {
  const id = uid('owner');
  await server.upsertUser({ id, name: `Owner ${id}` });
  const err = await apiError(userClient().setGuestUser({ id, name: 'Thief' }));
  assert.equal(err.code, 4);
  assert.equal(err.status, 400);
  assert.equal((await storedUser(id)).name, `Owner ${id}`);
});

test('a hard-deleted id can never connect or become a guest again (16)', async () => {
  const id = uid('tomb');
  await server.upsertUser({ id });
  await server.deleteUser(id, { hard_delete: true });
  const err = await connectRefused(userClient().connectUser({ id }, token(id)));
  assert.equal(err.code, 16);
  const gerr = await apiError(userClient().setGuestUser({ id }));
  assert.equal(gerr.code, 16);
  assert.equal(gerr.status, 404);
});

test('the token provider is called again after code 40 on connect', async () => {
  const id = uid('provider');
  let calls = 0;
  const provider = async () => {
    calls += 1;
    return calls === 1 ? token(id, { exp: nowSecs() - 60 }) : token(id);
  };
  const client = userClient();
  const res = await client.connectUser({ id, name: `P ${id}` }, provider);
  assert.equal(res.me.id, id);
  assert.equal(calls, 2, 'one expired token, then one good token');
});

test('the token provider is called again after code 40 on REST', async () => {
  const id = uid('provider-rest');
  let calls = 0;
  const provider = async () => {
    calls += 1;
    // First token lives just long enough to connect; later ones do not expire.
    return calls === 1 ? token(id, { exp: nowSecs() + 3 }) : token(id);
  };
  const client = userClient();
  await client.connectUser({ id }, provider);
  assert.equal(calls, 1);
  await sleep(4500);
  const { users } = await client.queryUsers({ id });
  assert.equal(users[0].id, id);
  assert.ok(calls >= 2, 'the expired REST call refreshed the token');
});

test('health.check: the server answers the SDK ping frame', async () => {
  const id = uid('ping');
  const client = userClient();
  const res = await client.connectUser({ id }, token(id));

  const seen = [];
  const sub = client.on('health.check', (e) => seen.push(e));
  try {
    // The exact frame the SDK sends every 25 s: a JSON array with one object.
    for (let i = 0; i < 3; i += 1) {
      client.wsConnection.ws.send(
        JSON.stringify([{ type: 'health.check', client_id: client.clientID }]),
      );
    }
    await eventually(() => seen.length >= 3, { timeoutMs: 3000, what: '3 health.check replies' });
  } finally {
    sub.unsubscribe();
  }
  for (const e of seen) {
    assert.equal(e.connection_id, res.connection_id);
    assert.equal(e.cid, '*');
    assertTimestamp(e.created_at, 'health.check created_at');
  }
});

test('health.check: the server sends its own at the configured interval', async (t) => {
  if (env.healthCheckSecs > 10) {
    t.skip(`server interval is ${env.healthCheckSecs}s; start the gateway with a short one`);
    return;
  }
  const id = uid('beat');
  const client = userClient();
  const res = await client.connectUser({ id }, token(id));
  const event = await nextEvent(
    client,
    'health.check',
    () => true,
    env.healthCheckSecs * 1000 + 3000,
  );
  assert.equal(event.connection_id, res.connection_id);
  assert.equal(client.wsConnection.isHealthy, true);
});

test('disconnectUser closes cleanly and the user goes offline', async () => {
  const id = uid('bye');
  const client = userClient();
  const res = await client.connectUser({ id }, token(id));
  const ws = client.wsConnection.ws;

  await client.disconnectUser();
  // disconnectUser resolves once the server's close frame came back (or after 1 s).
  await eventually(() => ws.readyState === ws.CLOSED, { what: 'socket closed' });
  assert.equal(client.userID, undefined);

  const stored = await eventually(
    async () => {
      const u = await storedUser(id);
      return u.online === false && u;
    },
    { what: 'user offline after disconnect' },
  );
  assert.ok(Date.parse(stored.last_active) >= Date.parse(res.me.last_active));
});

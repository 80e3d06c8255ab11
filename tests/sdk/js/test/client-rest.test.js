'use strict';
// Client-side REST on the public listener (spec §4.3): a user may edit only itself, may not
// change its role or teams, and queries never leak other users' private fields.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const {
  server,
  userClient,
  closeAll,
  uid,
  nowSecs,
  token,
  apiError,
  nextEvent,
} = require('../lib/gateway');

after(closeAll);

async function connected(extra = {}) {
  const id = uid('self');
  const client = userClient();
  await client.connectUser({ id, name: `Self ${id}`, ...extra }, token(id, { iat: nowSecs() }));
  return { id, client };
}

async function find(id) {
  const { users } = await server.queryUsers({ id });
  return users[0];
}

test('a user partially updates itself and gets user.updated', async () => {
  const { id, client } = await connected({ favorite_color: 'green' });
  const updated = nextEvent(client, 'user.updated', (e) => e.user.id === id);
  const res = await client.partialUpdateUser({
    id,
    set: { hobby: 'chess', 'prefs.lang': 'fr' },
    unset: ['favorite_color'],
  });
  assert.equal(res.users[id].hobby, 'chess');
  assert.deepEqual(res.users[id].prefs, { lang: 'fr' });
  assert.equal(res.users[id].favorite_color, undefined);
  const event = await updated;
  assert.equal(event.user.hobby, 'chess');
  assert.equal((await find(id)).hobby, 'chess');
});

test('a user upserts itself', async () => {
  const { id, client } = await connected();
  const res = await client.upsertUser({ id, name: `Renamed ${id}` });
  assert.equal(res.users[id].name, `Renamed ${id}`);
  assert.equal(res.users[id].role, 'user');
});

test('a user may not change its own role (17)', async () => {
  const { id, client } = await connected();
  const err = await apiError(client.partialUpdateUser({ id, set: { role: 'admin' } }));
  assert.equal(err.code, 17);
  assert.equal(err.status, 403);
  assert.equal(
    err.message,
    `UpdateUsersPartial failed with error: "User '${id}' with role 'user' is not allowed to perform action UpdateUserRole"`,
  );
  assert.equal((await find(id)).role, 'user');

  const err2 = await apiError(client.upsertUser({ id, role: 'admin' }));
  assert.equal(err2.code, 17);
  assert.equal(err2.status, 403);
});

test('a user may not change its own teams (17)', async () => {
  const { id, client } = await connected();
  const err = await apiError(client.partialUpdateUser({ id, set: { teams: ['red'] } }));
  assert.equal(err.code, 17);
  assert.equal(err.status, 403);
  assert.deepEqual((await find(id)).teams, []);
});

test('a user may not write server-owned fields', async () => {
  const { id, client } = await connected();
  const err = await apiError(client.partialUpdateUser({ id, set: { banned: true } }));
  assert.ok([400, 403].includes(err.status), `status ${err.status}`);
  assert.equal((await find(id)).banned, false);
});

test('a user may not update another user', async () => {
  const other = uid('other');
  await server.upsertUser({ id: other, name: `Other ${other}` });
  const { client } = await connected();
  const err = await apiError(client.partialUpdateUser({ id: other, set: { name: 'Hacked' } }));
  assert.ok(err.status >= 400 && err.status < 500, `status ${err.status}`);
  assert.equal((await find(other)).name, `Other ${other}`);
});

test('client queries hide revoke_tokens_issued_before', async () => {
  const { id, client } = await connected();
  await server.revokeUserToken(id, '2001-01-01T00:00:00.000Z');
  const admin = await find(id);
  assert.equal(Date.parse(admin.revoke_tokens_issued_before), Date.UTC(2001, 0, 1));
  const { users } = await client.queryUsers({ id });
  assert.equal(users.length, 1);
  assert.equal('revoke_tokens_issued_before' in users[0], false);
});

test('client queries use the same filters, sort and paging', async () => {
  const tag = uid('cq').replace(/-/g, '');
  await server.upsertUsers(
    [1, 2, 3, 4].map((n) => ({ id: `${tag}-${n}`, tag, rank: n, name: `Rank ${n} ${tag}` })),
  );
  const { client } = await connected();
  const { users } = await client.queryUsers({ tag, rank: { $gte: 2 } }, [{ rank: -1 }], {
    limit: 2,
    offset: 1,
  });
  assert.deepEqual(
    users.map((u) => u.rank),
    [3, 2],
  );
});

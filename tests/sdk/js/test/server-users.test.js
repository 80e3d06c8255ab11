'use strict';
// Server-side user operations of spec §4.2 and §5, through the JS SDK's own methods.

const { test, describe, after } = require('node:test');
const assert = require('node:assert/strict');
const {
  env,
  server,
  closeAll,
  uid,
  apiError,
  waitTask,
  assertTimestamp,
  UUID,
} = require('../lib/gateway');

after(closeAll);

async function find(id) {
  const { users } = await server.queryUsers({ id }, [], { include_deactivated_users: true });
  return users[0];
}

describe('upsertUsers', () => {
  test('creates users and returns them keyed by id', async () => {
    const bob = uid('bob');
    const carol = uid('carol');
    const res = await server.upsertUsers([
      { id: bob, name: `Bob ${bob}`, favorite_color: 'blue', nested: { a: [1, 2] } },
      { id: carol, name: `Carol ${carol}`, role: 'admin', teams: ['red', 'blue'] },
    ]);
    assert.deepEqual(Object.keys(res.users).sort(), [bob, carol].sort());
    assert.equal(typeof res.duration, 'string');

    const b = res.users[bob];
    assert.equal(b.id, bob);
    assert.equal(b.role, 'user');
    assert.deepEqual(b.teams, []);
    assert.equal(b.name, `Bob ${bob}`);
    assert.equal(b.favorite_color, 'blue', 'custom fields are flat');
    assert.deepEqual(b.nested, { a: [1, 2] });
    assertTimestamp(b.created_at, 'created_at');
    assertTimestamp(b.updated_at, 'updated_at');

    const c = res.users[carol];
    assert.equal(c.role, 'admin');
    assert.deepEqual([...c.teams].sort(), ['blue', 'red']);
  });

  test('replaces the whole user but keeps created_at', async () => {
    const id = uid('replace');
    const first = await server.upsertUser({
      id,
      name: 'First',
      role: 'admin',
      teams: ['red'],
      favorite_color: 'blue',
    });
    const second = await server.upsertUser({ id, name: 'Second' });
    const u = second.users[id];
    assert.equal(u.name, 'Second');
    assert.equal(u.favorite_color, undefined, 'custom fields not sent are removed');
    assert.equal(u.role, 'user', 'role not sent becomes user');
    assert.deepEqual(u.teams, [], 'teams not sent become empty');
    assert.equal(u.created_at, first.users[id].created_at);

    const stored = await find(id);
    assert.equal(stored.favorite_color, undefined);
    assert.equal(stored.role, 'user');
  });

  test('accepts custom roles set server-side', async () => {
    const id = uid('custom-role');
    const res = await server.upsertUser({ id, role: 'moderator_plus' });
    assert.equal(res.users[id].role, 'moderator_plus');
  });

  test('rejects an invalid id with code 4 and writes nothing of the batch', async () => {
    const good = uid('good');
    const err = await apiError(
      server.upsertUsers([
        { id: good, name: 'Good' },
        { id: 'bad id!', name: 'Bad' },
      ]),
    );
    assert.equal(err.code, 4);
    assert.equal(err.status, 400);
    assert.match(err.message, /is not a valid user id/);
    assert.match(err.message, /^UpdateUsers failed with error: /);
    assert.equal(err.body.StatusCode, 400);
    assert.equal(typeof err.body.duration, 'string');
    assert.ok(Array.isArray(err.body.details));
    assert.equal(await find(good), undefined, 'all-or-nothing: the valid user was not written');
  });

  test('rejects more than 100 users with code 4', async () => {
    const users = Array.from({ length: 101 }, (_, i) => ({ id: `${uid('many')}-${i}` }));
    const err = await apiError(server.upsertUsers(users));
    assert.equal(err.code, 4);
    assert.equal(err.status, 400);
    assert.equal(await find(users[0].id), undefined);
  });

  test('accepts exactly 100 users', async () => {
    const prefix = uid('hundred');
    const users = Array.from({ length: 100 }, (_, i) => ({ id: `${prefix}-${i}` }));
    const res = await server.upsertUsers(users);
    assert.equal(Object.keys(res.users).length, 100);
  });

  test('rejects custom data over 5 KiB with 413 code 22', async () => {
    const id = uid('big');
    const err = await apiError(server.upsertUser({ id, blob: 'x'.repeat(6 * 1024) }));
    assert.equal(err.status, 413);
    assert.equal(err.code, 22);
    assert.equal(await find(id), undefined);
  });

  test('refuses to upsert a deleted or a deactivated user with 16/404', async () => {
    const deleted = uid('gone');
    const deactivated = uid('asleep');
    await server.upsertUsers([{ id: deleted }, { id: deactivated }]);
    await server.deleteUser(deleted);
    await server.deactivateUser(deactivated);

    const e1 = await apiError(server.upsertUser({ id: deleted, name: 'Back' }));
    assert.equal(e1.code, 16);
    assert.equal(e1.status, 404);
    assert.match(e1.message, new RegExp(`the user ${deleted} was deleted`));

    const e2 = await apiError(server.upsertUser({ id: deactivated, name: 'Back' }));
    assert.equal(e2.code, 16);
    assert.equal(e2.status, 404);
    assert.match(e2.message, new RegExp(`the user ${deactivated} was deactivated`));
  });
});

describe('user ids and built-in limits', () => {
  test('ids with @ travel URL-encoded through every path route', async () => {
    const id = `${uid('mail')}@example`;
    await server.upsertUser({ id, name: 'At' });
    assert.equal((await server.exportUser(id)).user.id, id);
    assert.equal((await server.deactivateUser(id)).user.id, id);
    assert.equal((await server.reactivateUser(id)).user.id, id);
    assert.equal((await server.deleteUser(id)).user.id, id);
  });

  test('id length: 255 bytes is fine, 256 is code 4', async () => {
    const base = uid('len');
    const ok = base + 'x'.repeat(255 - base.length);
    const res = await server.upsertUser({ id: ok });
    assert.ok(res.users[ok]);
    const err = await apiError(server.upsertUser({ id: `${ok}y` }));
    assert.equal(err.code, 4);
    assert.match(err.message, /is not a valid user id/);
  });

  test('teams: at most 250, each at most 100 bytes (code 4)', async () => {
    const id = uid('teams');
    const many = Array.from({ length: 251 }, (_, i) => `t${i}`);
    assert.equal((await apiError(server.upsertUser({ id, teams: many }))).code, 4);
    assert.equal((await apiError(server.upsertUser({ id, teams: ['x'.repeat(101)] }))).code, 4);
    const res = await server.upsertUser({ id, teams: many.slice(0, 250) });
    assert.equal(res.users[id].teams.length, 250);
  });
});

describe('partialUpdateUsers', () => {
  test('set, dotted set and unset', async () => {
    const id = uid('partial');
    await server.upsertUser({ id, name: 'Old', color: 'red', keep: true });
    const res = await server.partialUpdateUsers([
      { id, set: { name: 'A', 'a.b': 1, 'a.c': 'x' }, unset: ['color'] },
    ]);
    const u = res.users[id];
    assert.equal(u.name, 'A');
    assert.deepEqual(u.a, { b: 1, c: 'x' });
    assert.equal(u.color, undefined);
    assert.equal(u.keep, true, 'untouched fields stay');

    const res2 = await server.partialUpdateUser({ id, unset: ['a.b', 'a.c'] });
    assert.deepEqual(res2.users[id].a, {}, 'unsetting the leaves keeps the parent object');

    const stored = await find(id);
    assert.equal(stored.name, 'A');
    assert.deepEqual(stored.a, {});
    assert.equal(stored.color, undefined);
  });

  test('updates several users at once', async () => {
    const a = uid('pa');
    const b = uid('pb');
    await server.upsertUsers([{ id: a }, { id: b }]);
    const res = await server.partialUpdateUsers([
      { id: a, set: { level: 1 } },
      { id: b, set: { level: 2 } },
    ]);
    assert.equal(res.users[a].level, 1);
    assert.equal(res.users[b].level, 2);
  });

  for (const [label, update] of [
    ['a key with ..', { set: { 'a..b': 1 } }],
    ['a key with whitespace', { set: { 'a b': 1 } }],
    ['a leading dot', { set: { '.a': 1 } }],
    ['a trailing dot', { unset: ['a.'] }],
    ['the same path in set and unset', { set: { x: 1 }, unset: ['x'] }],
    ['a path and its prefix in set and unset', { set: { 'p.q': 1 }, unset: ['p'] }],
    ['setting id', { set: { id: 'other' } }],
    ['setting created_at', { set: { created_at: '2020-01-01T00:00:00Z' } }],
    ['unsetting created_at', { unset: ['created_at'] }],
  ]) {
    test(`rejects ${label} with code 4`, async () => {
      const id = uid('badpath');
      await server.upsertUser({ id, x: 0, p: { q: 0 } });
      const err = await apiError(server.partialUpdateUser({ id, ...update }));
      assert.equal(err.code, 4);
      assert.equal(err.status, 400);
      assert.match(err.message, /^UpdateUsersPartial failed with error: /);
      const stored = await find(id);
      assert.equal(stored.x, 0);
      assert.deepEqual(stored.p, { q: 0 });
    });
  }

  test('is all-or-nothing across the batch', async () => {
    const a = uid('atomic');
    await server.upsertUser({ id: a, level: 1 });
    const err = await apiError(
      server.partialUpdateUsers([
        { id: a, set: { level: 2 } },
        { id: a, set: { 'bad..path': 1 } },
      ]),
    );
    assert.equal(err.code, 4);
    assert.equal((await find(a)).level, 1);
  });

  test('refuses updates to a deleted user with 16/404', async () => {
    const id = uid('pdel');
    await server.upsertUser({ id });
    await server.deleteUser(id);
    const err = await apiError(server.partialUpdateUser({ id, set: { name: 'x' } }));
    assert.equal(err.code, 16);
    assert.equal(err.status, 404);
    assert.match(err.message, /was deleted/);
  });
});

describe('delete and restore', () => {
  test('deleteUser soft-deletes, hides from queries, restoreUsers brings it back', async () => {
    const id = uid('soft');
    await server.upsertUser({ id, name: `Soft ${id}`, favorite_color: 'teal' });
    const res = await server.deleteUser(id, { mark_messages_deleted: false });
    assert.equal(res.user.id, id);
    assertTimestamp(res.user.deleted_at, 'deleted_at');
    assert.equal(await find(id), undefined, 'soft-deleted users are never returned');

    const restored = await server.restoreUsers([id]);
    assert.equal(typeof restored.duration, 'string');
    const back = await find(id);
    assert.ok(back, 'restored user is visible again');
    assert.equal(back.favorite_color, 'teal', 'data is kept by a soft delete');
    assert.equal(back.deleted_at, undefined);
  });

  test('hard delete leaves a tombstone: the id can never be created again', async () => {
    const id = uid('hard');
    await server.upsertUser({ id, name: `Hard ${id}` });
    const res = await server.deleteUser(id, {
      hard_delete: true,
      mark_messages_deleted: true,
      delete_conversation_channels: true,
    });
    assertTimestamp(res.user.deleted_at, 'deleted_at');
    assert.equal(await find(id), undefined);
    const err = await apiError(server.upsertUser({ id }));
    assert.equal(err.code, 16);
    assert.equal(err.status, 404);
  });

  test('deleting an unknown user is 16/404', async () => {
    const err = await apiError(server.deleteUser(uid('nobody')));
    assert.equal(err.code, 16);
    assert.equal(err.status, 404);
  });

  test('deleteUsers runs as a task with per-user results', async () => {
    const a = uid('da');
    const b = uid('db');
    await server.upsertUsers([{ id: a }, { id: b }]);
    const { task_id: taskId } = await server.deleteUsers([a, b], {
      user: 'soft',
      messages: 'soft',
    });
    assert.match(taskId, UUID);
    assert.equal(taskId.length, 36);
    // Marked synchronously, before the task id came back.
    assert.equal(await find(a), undefined);
    assert.equal(await find(b), undefined);

    const task = await waitTask(taskId);
    assert.equal(task.task_id, taskId);
    assert.equal(task.status, 'completed');
    assertTimestamp(task.created_at, 'task created_at');
    assertTimestamp(task.updated_at, 'task updated_at');
    assert.deepEqual(task.result[a], { status: 'ok' });
    assert.deepEqual(task.result[b], { status: 'ok' });

    await server.restoreUsers([a, b]);
    assert.ok(await find(a));
    assert.ok(await find(b));
  });

  test('deleteUsers hard and pruning leave tombstones', async () => {
    const hard = uid('bh');
    const pruned = uid('bp');
    await server.upsertUsers([{ id: hard }, { id: pruned, name: `Pruned ${pruned}` }]);
    const t1 = await server.deleteUsers([hard], {
      user: 'hard',
      messages: 'hard',
      conversations: 'hard',
    });
    const t2 = await server.deleteUsers([pruned], { user: 'pruning' });
    assert.equal((await waitTask(t1.task_id)).status, 'completed');
    assert.equal((await waitTask(t2.task_id)).status, 'completed');
    for (const id of [hard, pruned]) {
      assert.equal(await find(id), undefined);
      const err = await apiError(server.upsertUser({ id }));
      assert.equal(err.code, 16, `${id} can not be recreated`);
    }
  });

  test('deleteUsers validates its options', async () => {
    const id = uid('dv');
    await server.upsertUser({ id });
    const err = await apiError(
      server.deleteUsers([id], { user: 'hard', messages: 'soft', conversations: 'hard' }),
    );
    assert.equal(err.code, 4);
    assert.equal(err.status, 400);
    assert.ok(await find(id), 'a refused batch deletes nothing');

    const tooMany = Array.from({ length: 101 }, (_, i) => `${id}-${i}`);
    const err2 = await apiError(server.deleteUsers(tooMany, { user: 'soft' }));
    assert.equal(err2.code, 4);
  });
});

describe('deactivate and reactivate', () => {
  test('deactivateUser / reactivateUser', async () => {
    const adminId = uid('admin');
    const id = uid('sleepy');
    await server.upsertUsers([
      { id: adminId, role: 'admin' },
      { id, name: `Sleepy ${id}` },
    ]);
    const res = await server.deactivateUser(id, {
      mark_messages_deleted: true,
      created_by_id: adminId,
    });
    assert.equal(res.user.id, id);
    assertTimestamp(res.user.deactivated_at, 'deactivated_at');

    const { users: hidden } = await server.queryUsers({ id });
    assert.equal(hidden.length, 0, 'deactivated users are hidden by default');
    const { users: shown } = await server.queryUsers({ id }, [], {
      include_deactivated_users: true,
    });
    assert.equal(shown.length, 1);
    assertTimestamp(shown[0].deactivated_at, 'deactivated_at in query');

    const back = await server.reactivateUser(id, {
      restore_messages: true,
      name: `Awake ${id}`,
      created_by_id: adminId,
    });
    assert.equal(back.user.id, id);
    assert.equal(back.user.name, `Awake ${id}`);
    assert.equal(back.user.deactivated_at, undefined);
    const { users } = await server.queryUsers({ id });
    assert.equal(users.length, 1);

    const err = await apiError(server.reactivateUser(id));
    assert.equal(err.code, 4);
    assert.match(err.message, /is not deactivated/);
    assert.match(err.message, /^ReactivateUser failed with error: /);
  });

  test('deactivateUsers / reactivateUsers run as tasks', async () => {
    const a = uid('ta');
    const b = uid('tb');
    await server.upsertUsers([{ id: a }, { id: b }]);
    const { task_id: taskId } = await server.deactivateUsers([a, b]);
    assert.match(taskId, UUID);
    const { users: now } = await server.queryUsers({ id: { $in: [a, b] } });
    assert.equal(now.length, 0, 'marked before the task id is returned');

    const task = await waitTask(taskId);
    assert.equal(task.status, 'completed');
    assert.ok(Array.isArray(task.result.users));
    const ids = task.result.users.map((u) => u.id).sort();
    assert.deepEqual(ids, [a, b].sort());
    for (const u of task.result.users) assertTimestamp(u.deactivated_at, 'deactivated_at');

    const re = await server.reactivateUsers([a, b]);
    assert.match(re.task_id, UUID);
    assert.equal((await waitTask(re.task_id)).status, 'completed');
    const { users: after } = await server.queryUsers({ id: { $in: [a, b] } });
    assert.equal(after.length, 2);
  });

  test('deactivating an unknown user is 16/404', async () => {
    const err = await apiError(server.deactivateUser(uid('nobody')));
    assert.equal(err.code, 16);
    assert.equal(err.status, 404);
  });
});

describe('queryUsers', () => {
  const tag = uid('q').replace(/-/g, '');
  const ids = ['ann', 'ben', 'cat', 'dan', 'eve'].map((n) => `${tag}-${n}`);
  const seed = [
    { id: ids[0], name: 'Ann Smith', tag, score: 10, teams: ['red'], role: 'admin' },
    { id: ids[1], name: 'Ben Jones', tag, score: 20, teams: ['red', 'blue'], extra: 'y' },
    { id: ids[2], name: 'Cat Smithers', tag, score: 30, teams: ['blue'] },
    { id: ids[3], name: 'Dan Brown', tag, score: 40, extra: 'y' },
    { id: ids[4], name: 'Eve Adams', tag, score: 50 },
  ];
  // Seeded on first use, so a failure surfaces inside a test rather than at load time.
  let seeded;
  const ready = () => (seeded ??= server.upsertUsers(seed));

  async function q(filter, sort = [{ score: 1 }], options = {}) {
    await ready();
    const { users } = await server.queryUsers({ tag, ...filter }, sort, options);
    return users.map((u) => u.id.slice(tag.length + 1));
  }

  test('$eq and bare values', async () => {
    assert.deepEqual(await q({ name: 'Ben Jones' }), ['ben']);
    assert.deepEqual(await q({ name: { $eq: 'Ben Jones' } }), ['ben']);
    assert.deepEqual(await q({ role: 'admin' }), ['ann']);
  });

  test('$ne, $in, $nin', async () => {
    assert.deepEqual(await q({ score: { $ne: 30 } }), ['ann', 'ben', 'dan', 'eve']);
    assert.deepEqual(await q({ id: { $in: [ids[4], ids[0]] } }), ['ann', 'eve']);
    assert.deepEqual(await q({ score: { $nin: [10, 20] } }), ['cat', 'dan', 'eve']);
  });

  test('$gt, $gte, $lt, $lte on a custom field', async () => {
    assert.deepEqual(await q({ score: { $gt: 30 } }), ['dan', 'eve']);
    assert.deepEqual(await q({ score: { $gte: 30 } }), ['cat', 'dan', 'eve']);
    assert.deepEqual(await q({ score: { $lt: 30 } }), ['ann', 'ben']);
    assert.deepEqual(await q({ score: { $lte: 30 } }), ['ann', 'ben', 'cat']);
  });

  test('$exists, $autocomplete, $contains', async () => {
    assert.deepEqual(await q({ extra: { $exists: true } }), ['ben', 'dan']);
    assert.deepEqual(await q({ extra: { $exists: false } }), ['ann', 'cat', 'eve']);
    assert.deepEqual(await q({ name: { $autocomplete: 'smi' } }), ['ann', 'cat']);
    assert.deepEqual(await q({ name: { $autocomplete: 'jon' } }), ['ben']);
    assert.deepEqual(await q({ teams: { $contains: 'blue' } }), ['ben', 'cat']);
  });

  test('$and, $or, $nor', async () => {
    assert.deepEqual(await q({ $and: [{ score: { $gt: 10 } }, { teams: { $contains: 'red' } }] }), [
      'ben',
    ]);
    assert.deepEqual(await q({ $or: [{ score: 10 }, { score: 50 }] }), ['ann', 'eve']);
    assert.deepEqual(await q({ $nor: [{ score: { $lt: 30 } }, { score: 50 }] }), ['cat', 'dan']);
  });

  test('sort, limit and offset', async () => {
    assert.deepEqual(await q({}, [{ score: -1 }]), ['eve', 'dan', 'cat', 'ben', 'ann']);
    assert.deepEqual(await q({}, [{ role: 1 }, { score: -1 }]), [
      'ann',
      'eve',
      'dan',
      'cat',
      'ben',
    ]);
    assert.deepEqual(await q({}, [{ score: 1 }], { limit: 2 }), ['ann', 'ben']);
    assert.deepEqual(await q({}, [{ score: 1 }], { limit: 2, offset: 2 }), ['cat', 'dan']);
    assert.deepEqual(await q({}, [{ score: 1 }], { offset: 4 }), ['eve']);
    assert.deepEqual(await q({}, [{ name: 1 }]), ['ann', 'ben', 'cat', 'dan', 'eve']);
  });

  test('returned users are full objects with flat custom fields', async () => {
    await ready();
    const { users } = await server.queryUsers({ id: ids[1] });
    const u = users[0];
    assert.equal(u.name, 'Ben Jones');
    assert.equal(u.score, 20);
    assert.equal(u.extra, 'y');
    assert.equal(u.role, 'user');
    assert.deepEqual([...u.teams].sort(), ['blue', 'red']);
    assertTimestamp(u.created_at, 'created_at');
    assert.equal(u.online, false);
  });

  test('limits on limit, offset and sort are enforced with code 4', async () => {
    await ready();
    for (const [sort, options] of [
      [[], { limit: 101 }],
      [[], { offset: 1001 }],
      [[{ a: 1 }, { b: 1 }, { c: 1 }, { d: 1 }, { e: 1 }, { f: 1 }], {}],
    ]) {
      const err = await apiError(server.queryUsers({ tag }, sort, options));
      assert.equal(err.code, 4, JSON.stringify(options) + JSON.stringify(sort));
      assert.equal(err.status, 400);
      assert.match(err.message, /^QueryUsers failed with error: /);
    }
    const { users } = await server.queryUsers({ tag }, [], { limit: 100, offset: 1000 });
    assert.deepEqual(users, []);
  });
});

describe('export', () => {
  test('exportUser returns the user with empty messages and reactions', async () => {
    const id = uid('gdpr');
    await server.upsertUser({ id, name: `Gdpr ${id}`, favorite_color: 'plum' });
    const res = await server.exportUser(id);
    assert.equal(res.user.id, id);
    assert.equal(res.user.favorite_color, 'plum');
    assert.deepEqual(res.messages, []);
    assert.deepEqual(res.reactions, []);
  });

  test('exportUsers runs as a task whose url serves the export', async () => {
    const a = uid('xa');
    const b = uid('xb');
    await server.upsertUsers([
      { id: a, name: `Xa ${a}` },
      { id: b, name: `Xb ${b}` },
    ]);
    const { task_id: taskId } = await server.exportUsers({ user_ids: [a, b] });
    assert.match(taskId, UUID);
    const task = await waitTask(taskId);
    assert.equal(task.status, 'completed');
    assert.equal(typeof task.result.url, 'string');
    assert.ok(task.result.url.includes('/exports/users/'), task.result.url);

    const response = await fetch(new URL(task.result.url, env.adminUrl));
    assert.equal(response.status, 200);
    const body = await response.text();
    assert.ok(body.includes(a) && body.includes(b), 'the export holds both users');
  });

  test('exportUsers takes at most 25 ids', async () => {
    const ids = Array.from({ length: 26 }, (_, i) => `${uid('x26')}-${i}`);
    const err = await apiError(server.exportUsers({ user_ids: ids }));
    assert.equal(err.code, 4);
    assert.equal(err.status, 400);
  });
});

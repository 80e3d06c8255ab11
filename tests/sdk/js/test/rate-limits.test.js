'use strict';
// Rate limits as Stream counts them: getRateLimits through the server SDK (its platforms,
// endpoints and counts) and a budget per endpoint. Only server-side calls are compared, so the
// suite holds on a cluster too (counts are per node; every server call lands on one node).

const { test, describe, after } = require('node:test');
const assert = require('node:assert/strict');
const { server, closeAll, uid, nowSecs } = require('../lib/gateway');

after(closeAll);

const PLATFORMS = ['server_side', 'android', 'ios', 'web'];

/** Runs `fn` until its two reports fall in one one-minute window (at most three tries). */
async function inOneWindow(fn) {
  for (let attempt = 0; attempt < 3; attempt += 1) {
    const [before, after_] = await fn();
    const resets = PLATFORMS.flatMap((p) =>
      Object.values({ ...before[p], ...after_[p] }).map((i) => i.reset),
    );
    if (new Set(resets).size === 1) return [before, after_];
  }
  throw new Error('three window boundaries in a row');
}

describe('rate limits', () => {
  test('getRateLimits answers every platform and endpoint, and counts itself', async () => {
    const all = await server.getRateLimits();
    assert.equal(typeof all.duration, 'string');
    const now = nowSecs();
    for (const platform of PLATFORMS) {
      assert.equal(typeof all[platform], 'object', platform);
      for (const name of [
        'Connect',
        'CreateGuest',
        'QueryUsers',
        'UpdateUsers',
        'UpdateUsersPartial',
        'DeleteUser',
        'GetApp',
        'UpdateApp',
        'GetRateLimits',
      ]) {
        const info = all[platform][name];
        assert.ok(info, `${platform}.${name} missing`);
        assert.ok(Number.isInteger(info.limit) && info.limit > 0, `${platform}.${name}`);
        assert.ok(info.remaining >= 0 && info.remaining <= info.limit, `${platform}.${name}`);
        assert.ok(info.reset > now - 1 && info.reset <= now + 61, `${platform}.${name} reset`);
      }
    }
    // Stream's documented defaults per minute.
    assert.equal(all.web.Connect.limit, 10000);
    assert.equal(all.server_side.QueryUsers.limit, 1000);
    assert.equal(all.server_side.UpdateUsers.limit, 300);
    assert.equal(all.server_side.DeleteUser.limit, 60);
    // This call was counted on the server side, and nowhere else.
    const own = all.server_side.GetRateLimits;
    assert.ok(own.remaining < own.limit, JSON.stringify(own));
    assert.equal(all.android.GetRateLimits.remaining, all.android.GetRateLimits.limit);
  });

  test('platforms and endpoints can be chosen', async () => {
    const some = await server.getRateLimits({
      serverSide: true,
      android: true,
      endpoints: ['GetRateLimits', 'QueryUsers'],
    });
    assert.deepEqual(
      Object.keys(some)
        .filter((k) => k !== 'duration')
        .sort(),
      ['android', 'server_side'],
    );
    assert.deepEqual(Object.keys(some.server_side).sort(), ['GetRateLimits', 'QueryUsers']);
    assert.deepEqual(Object.keys(some.android).sort(), ['GetRateLimits', 'QueryUsers']);
    const ios = await server.getRateLimits({ ios: true });
    assert.deepEqual(
      Object.keys(ios).filter((k) => k !== 'duration'),
      ['ios'],
    );
  });

  test('each endpoint spends its own budget', async () => {
    const endpoints = ['UpdateUsers', 'UpdateUsersPartial', 'QueryUsers'];
    const id = uid('rl');
    const [before, after_] = await inOneWindow(async () => {
      const b = await server.getRateLimits({ serverSide: true, endpoints });
      await server.upsertUser({ id });
      await server.upsertUser({ id });
      await server.partialUpdateUser({ id, set: { k: 1 } });
      const a = await server.getRateLimits({ serverSide: true, endpoints });
      return [b, a];
    });
    const spent = (name) =>
      before.server_side[name].remaining - after_.server_side[name].remaining;
    assert.equal(spent('UpdateUsers'), 2);
    assert.equal(spent('UpdateUsersPartial'), 1);
    assert.equal(spent('QueryUsers'), 0);
  });
});

'use strict';
// App settings (spec §4.2) and the rules they switch on: unique usernames (§5.5), dev tokens,
// guest creation, app-level token revocation (§2.3). Every test restores what it changed.

const { test, describe, after } = require('node:test');
const assert = require('node:assert/strict');
const {
  server,
  userClient,
  closeAll,
  uid,
  nowSecs,
  token,
  connectRefused,
  apiError,
  sleep,
  assertTimestamp,
} = require('../lib/gateway');

after(closeAll);

/** Apply `settings`, run `fn`, then put back the previous value of every key touched. */
async function withAppSettings(settings, fn) {
  const { app: before } = await server.getAppSettings();
  const restore = {};
  for (const key of Object.keys(settings)) {
    restore[key] = key in before ? before[key] : null;
  }
  await server.updateAppSettings(settings);
  try {
    return await fn();
  } finally {
    await server.updateAppSettings(restore);
  }
}

/** A name unique to this run that normalises to letters and digits only. */
const uniqueName = () => `John Doe ${uid('n').slice(2)}`;
const normalise = (name) => name.replace(/[^\p{L}\p{N}]/gu, '').toLowerCase();

describe('app settings', () => {
  test('getAppSettings answers exactly {app, duration}', async () => {
    const res = await server.getAppSettings();
    assert.deepEqual(Object.keys(res), ['app', 'duration']);
    assert.equal(typeof res.duration, 'string');
    assert.equal(typeof res.app, 'object');
    assert.equal(res.app.enforce_unique_usernames, 'no', 'default is no');
    assert.equal(res.app.disable_auth_checks ?? false, false);
    assert.equal(res.app.guest_user_creation_disabled ?? false, false);
  });

  test('updateAppSettings stores unknown keys and merges them', async () => {
    const k1 = `x_${uid('k').replace(/-/g, '_')}`;
    const k2 = `y_${uid('k').replace(/-/g, '_')}`;
    const hooks = [
      {
        hook_type: 'webhook',
        enabled: true,
        event_types: ['user.updated'],
        webhook_url: 'http://127.0.0.1:9/hook',
      },
    ];
    await withAppSettings({ event_hooks: hooks }, async () => {
      const res = await server.updateAppSettings({ [k1]: { nested: [1, 'two'] } });
      assert.equal(typeof res.duration, 'string');
      await server.updateAppSettings({ [k2]: 42 });
      const { app } = await server.getAppSettings();
      assert.deepEqual(app[k1], { nested: [1, 'two'] });
      assert.equal(app[k2], 42);
      assert.deepEqual(app.event_hooks, hooks, 'event_hooks are returned verbatim');
    });
  });

  test('enforce_unique_usernames rejects values outside no/app/team with code 4', async () => {
    const err = await apiError(server.updateAppSettings({ enforce_unique_usernames: 'yes' }));
    assert.equal(err.code, 4);
    assert.equal(err.status, 400);
    assert.match(err.message, /enforce_unique_usernames must be one of \[no app team\]/);
    assert.match(err.message, /^UpdateApp failed with error: /);
    const { app } = await server.getAppSettings();
    assert.equal(app.enforce_unique_usernames, 'no');
  });
});

describe('unique usernames: app', () => {
  const app = (fn) => withAppSettings({ enforce_unique_usernames: 'app' }, fn);

  test('upsert and partial update collide on the normalised name (code 6)', () =>
    app(async () => {
      const name = uniqueName();
      const a = uid('ua');
      const b = uid('ub');
      await server.upsertUser({ id: a, name });

      const dotted = name.toLowerCase().replace(/ /g, '.');
      assert.equal(normalise(dotted), normalise(name));
      const err = await apiError(server.upsertUser({ id: b, name: dotted }));
      assert.equal(err.code, 6);
      assert.equal(err.status, 400);
      assert.match(err.message, /^UpdateUsers failed with error: /);
      assert.match(err.message, /username '.*' already exists/);
      const { users } = await server.queryUsers({ id: b });
      assert.equal(users.length, 0, 'the refused upsert wrote nothing');

      await server.upsertUser({ id: b, name: 'Someone Else' });
      const err2 = await apiError(
        server.partialUpdateUser({ id: b, set: { name: name.toUpperCase() } }),
      );
      assert.equal(err2.code, 6);
      assert.equal(err2.status, 400);

      // Re-saving a user's own name is not a collision.
      const same = await server.upsertUser({ id: a, name, extra: 1 });
      assert.equal(same.users[a].name, name);
    }));

  test('duplicates inside one batch collide and nothing is written', () =>
    app(async () => {
      const name = uniqueName();
      const a = uid('ba');
      const b = uid('bb');
      const err = await apiError(
        server.upsertUsers([
          { id: a, name },
          { id: b, name: name.toLowerCase() },
        ]),
      );
      assert.equal(err.code, 6);
      const { users } = await server.queryUsers({ id: { $in: [a, b] } });
      assert.equal(users.length, 0);
    }));

  test('names that normalise to nothing never collide', () =>
    app(async () => {
      const res = await server.upsertUsers([
        { id: uid('e1'), name: '...' },
        { id: uid('e2'), name: '!!!' },
      ]);
      assert.equal(Object.keys(res.users).length, 2);
    }));

  test('connectUser and setGuestUser are checked too', () =>
    app(async () => {
      const name = uniqueName();
      await server.upsertUser({ id: uid('holder'), name });

      const id = uid('conn');
      const err = await connectRefused(userClient().connectUser({ id, name }, token(id)));
      assert.equal(err.code, 6);

      const gerr = await apiError(userClient().setGuestUser({ id: uid('g'), name }));
      assert.equal(gerr.code, 6);
      assert.equal(gerr.status, 400);
    }));

  test('deactivated users do not hold their name; reactivating needs a new one', () =>
    app(async () => {
      const name = uniqueName();
      const a = uid('da');
      const b = uid('db');
      await server.upsertUser({ id: a, name });
      await server.deactivateUser(a);
      await server.upsertUser({ id: b, name });

      const err = await apiError(server.reactivateUser(a));
      assert.equal(err.code, 6);
      const ok = await server.reactivateUser(a, { name: `${name} Two` });
      assert.equal(ok.user.name, `${name} Two`);
    }));

  test('deleted users do not hold their name; restoring a taken name fails', () =>
    app(async () => {
      const name = uniqueName();
      const a = uid('sa');
      const b = uid('sb');
      await server.upsertUser({ id: a, name });
      await server.deleteUser(a);
      await server.upsertUser({ id: b, name });
      const err = await apiError(server.restoreUsers([a]));
      assert.equal(err.code, 6);
    }));

  test('enabling it does not validate existing names (going forward only)', async () => {
    const name = uniqueName();
    const a = uid('fa');
    const b = uid('fb');
    await server.upsertUsers([
      { id: a, name },
      { id: b, name },
    ]);
    await app(async () => {
      const res = await server.partialUpdateUser({ id: b, set: { hobby: 'chess' } });
      assert.equal(res.users[b].hobby, 'chess', 'an unrelated update is not refused');
      const err = await apiError(server.upsertUser({ id: uid('fc'), name }));
      assert.equal(err.code, 6, 'a new collision is refused');
    });
  });

  test('concurrent writers racing for one name: exactly one wins', () =>
    app(async () => {
      const name = uniqueName();
      const ids = Array.from({ length: 6 }, () => uid('race'));
      const results = await Promise.allSettled(ids.map((id) => server.upsertUser({ id, name })));
      const won = results.filter((r) => r.status === 'fulfilled');
      assert.equal(won.length, 1);
      for (const r of results.filter((x) => x.status === 'rejected')) {
        assert.equal(r.reason.code, 6);
      }
    }));
});

describe('unique usernames: team', () => {
  const team = (fn) => withAppSettings({ enforce_unique_usernames: 'team' }, fn);

  test('collides only inside a shared team', () =>
    team(async () => {
      const name = uniqueName();
      const red = uid('red');
      const blue = uid('blue');
      await server.upsertUser({ id: uid('t1'), name, teams: [red] });

      const err = await apiError(server.upsertUser({ id: uid('t2'), name, teams: [blue, red] }));
      assert.equal(err.code, 6);
      assert.equal(err.status, 400);
      assert.match(err.message, new RegExp(`already exists in team '${red}'`));

      const other = uid('t3');
      await server.upsertUser({ id: other, name, teams: [blue] });
      const noTeam = await server.upsertUser({ id: uid('t4'), name });
      assert.equal(Object.keys(noTeam.users).length, 1, 'users without teams are not checked');

      // A team change that brings the user into a team holding the name collides.
      const err2 = await apiError(
        server.partialUpdateUser({ id: other, set: { teams: [blue, red] } }),
      );
      assert.equal(err2.code, 6);
    }));
});

describe('dev tokens', () => {
  test('refused with 43 unless disable_auth_checks is on', async () => {
    const id = uid('dev');
    const probe = userClient();
    const devToken = probe.devToken(id);
    assert.ok(devToken.endsWith('.devtoken'));

    const err = await connectRefused(userClient().connectUser({ id }, devToken));
    assert.equal(err.code, 43);

    await withAppSettings({ disable_auth_checks: true }, async () => {
      const { app } = await server.getAppSettings();
      assert.equal(app.disable_auth_checks, true);
      const res = await userClient().connectUser({ id, name: `Dev ${id}` }, devToken);
      assert.equal(res.me.id, id);
    });
  });
});

describe('guests', () => {
  test('guest_user_creation_disabled refuses guests with code 17', () =>
    withAppSettings({ guest_user_creation_disabled: true }, async () => {
      const err = await apiError(userClient().setGuestUser({ id: uid('g'), name: 'No' }));
      assert.equal(err.code, 17);
      assert.equal(err.status, 403);
    }));

  test('POST /guest with server auth creates a guest', async () => {
    const id = uid('sguest');
    const res = await server.post(`${server.baseURL}/guest`, { user: { id, name: `G ${id}` } });
    assert.equal(res.user.id, id);
    assert.equal(res.user.role, 'guest');
    assert.equal(typeof res.access_token, 'string');
    const payload = JSON.parse(Buffer.from(res.access_token.split('.')[1], 'base64url'));
    assert.equal(payload.user_id, id);
    const conn = await userClient().connectUser({ id }, res.access_token);
    assert.equal(conn.me.role, 'guest');
  });
});

describe('revocation', () => {
  test('app-level revokeTokens revokes older tokens, with or without iat', async () => {
    const id = uid('apprev');
    await server.upsertUser({ id });
    const oldToken = token(id, { iat: nowSecs() - 60 });
    const noIat = token(id);
    const cutoff = new Date(Date.now() - 30_000);
    try {
      await server.revokeTokens(cutoff);
      const { app } = await server.getAppSettings();
      assertTimestamp(app.revoke_tokens_issued_before, 'revoke_tokens_issued_before');
      assert.equal(Date.parse(app.revoke_tokens_issued_before), cutoff.getTime());

      const e1 = await connectRefused(userClient().connectUser({ id }, oldToken));
      assert.equal(e1.code, 40);
      assert.match(e1.message, /This token has been revoked, please generate a new token/);
      const e2 = await connectRefused(userClient().connectUser({ id }, noIat));
      assert.equal(e2.code, 40);

      const fresh = userClient();
      const ok = await fresh.connectUser({ id }, token(id, { iat: nowSecs() }));
      assert.equal(ok.me.id, id);
      await fresh.disconnectUser();
    } finally {
      await server.revokeTokens(null);
    }
    const { app } = await server.getAppSettings();
    assert.equal(app.revoke_tokens_issued_before ?? null, null);
    const back = await userClient().connectUser({ id }, oldToken);
    assert.equal(back.me.id, id, 'null lifts the revocation');
  });

  for (const [label, value] of [
    ['with Z and milliseconds', '2024-01-01T00:00:00.000Z'],
    ['with +00:00', '2024-01-01T00:00:00+00:00'],
    ['without a zone', '2024-01-01T00:00:00'],
  ]) {
    test(`user-level revocation accepts a timestamp ${label}`, async () => {
      const id = uid('fmt');
      await server.upsertUser({ id });
      await server.revokeUserToken(id, value);
      const before = Date.UTC(2024, 0, 1) / 1000;
      const e = await connectRefused(
        userClient().connectUser({ id }, token(id, { iat: before - 60 })),
      );
      assert.equal(e.code, 40);
      const ok = await userClient().connectUser({ id }, token(id, { iat: before + 60 }));
      assert.equal(ok.me.id, id);
      const { users } = await server.queryUsers({ id });
      assert.equal(Date.parse(users[0].revoke_tokens_issued_before), before * 1000);
    });
  }

  test('revokeUserToken(null) lifts a user-level revocation', async () => {
    const id = uid('lift');
    await server.upsertUser({ id });
    const t = token(id, { iat: nowSecs() - 60 });
    await server.revokeUserToken(id);
    assert.equal((await connectRefused(userClient().connectUser({ id }, t))).code, 40);
    await server.revokeUserToken(id, null);
    await sleep(50);
    const ok = await userClient().connectUser({ id }, t);
    assert.equal(ok.me.id, id);
  });
});

'use strict';
// The official JS SDK as a client of a gateway cluster, driven by the Rust cluster tests
// (tests/cluster/sdk.rs). It reads one JSON command a line on stdin and writes JSON lines on
// stdout:
//
//   {"ready": true, "sdk": "9.x", "node": "v20.x"}          once, when the SDK is loaded
//   {"id": n, "ok": value} | {"id": n, "error": {...}}       the answer to command n
//   {"client": name, "at": ms, "event": {...}}               every event a client dispatches
//   {"client": name, "at": ms, "closed": {code, reason}}     a client's socket closed
//   {"client": name, "at": ms, "connecting": n}              the SDK opens its socket again
//   {"unhandled": {...}}                                     a promise rejection nobody handled
//
// `at` is the wall clock (ms since the epoch) when the SDK handed the line over. Commands:
//
//   connect     {client, url, user, iat?}  connectUser on the public listener at `url`, with a
//                                          user token the SDK's server helper signs (`iat` in
//                                          seconds, or none); answers the first health check
//   user        {client}                   what `client.user` holds now
//   query_users {client, filter, sort?, options?}   client-side queryUsers
//   disconnect  {client}                   disconnectUser
//   server      {url, method, args}        a server-side StreamChat on the admin listener at
//                                          `url` calls `method(...args)`
//   balancer    {backends}                 a TCP load balancer on 127.0.0.1:0 in front of the
//                                          given http://host:port listeners: each connection
//                                          goes to the first one that accepts it; answers
//                                          {url}
//   exit                                   ends the process
//
// The key and secret come from GATEWAY_API_KEY and GATEWAY_API_SECRET.

const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const readline = require('node:readline');
const { StreamChat } = require('stream-chat');

// The package's exports hide its package.json; read it from the installed folder.
const sdkVersion = JSON.parse(
  fs.readFileSync(path.join(__dirname, '..', 'node_modules', 'stream-chat', 'package.json'), 'utf8'),
).version;

const apiKey = process.env.GATEWAY_API_KEY;
const apiSecret = process.env.GATEWAY_API_SECRET;
if (!apiKey || !apiSecret) {
  process.stderr.write('driver.js: GATEWAY_API_KEY and GATEWAY_API_SECRET must be set\n');
  process.exit(2);
}

// Generous HTTP timeout: the tests run beside builds on a small machine.
const HTTP_TIMEOUT_MS = 10000;

function emit(line) {
  process.stdout.write(JSON.stringify(line) + '\n');
}

/** Client-side clients by the name the test gave them. */
const clients = new Map();
/** Server-side clients by admin URL. */
const servers = new Map();
/** The load balancers started, closed on exit. */
const balancers = [];

// Signs user tokens with the app secret the way an integrator's back end does.
const signer = new StreamChat(apiKey, apiSecret);

function serverAt(url) {
  if (!servers.has(url)) {
    servers.set(url, new StreamChat(apiKey, apiSecret, { baseURL: url, timeout: HTTP_TIMEOUT_MS }));
  }
  return servers.get(url);
}

function clientNamed(name) {
  const client = clients.get(name);
  if (!client) throw new Error(`no client named ${name}`);
  return client;
}

/**
 * Reports every close of the client's socket and every time the SDK opens it again. The
 * SDK binds `onclose` to each socket it opens, so wrapping the method covers the sockets to
 * come; the current one is bound again by hand.
 */
function watchSocket(name, client) {
  const conn = client.wsConnection;
  const onclose = conn.onclose;
  conn.onclose = (wsID, event) => {
    if (wsID === conn.wsID) {
      emit({
        client: name,
        at: Date.now(),
        closed: { code: event.code, reason: String(event.reason || '') },
      });
    }
    return onclose(wsID, event);
  };
  if (conn.ws) conn.ws.onclose = conn.onclose.bind(conn, conn.wsID);
  let attempts = 0;
  const connect = conn._connect.bind(conn);
  conn._connect = (...args) => {
    attempts += 1;
    emit({ client: name, at: Date.now(), connecting: attempts });
    return connect(...args);
  };
}

async function connect({ client: name, url, user, iat }) {
  if (clients.has(name)) throw new Error(`client ${name} exists`);
  const client = new StreamChat(apiKey, {
    baseURL: url,
    allowServerSideConnect: true,
    timeout: HTTP_TIMEOUT_MS,
  });
  clients.set(name, client);
  client.on((event) => {
    if (event.type === 'health.check') return;
    emit({ client: name, at: Date.now(), event });
  });
  const token = signer.createToken(user.id, undefined, iat);
  const first = await client.connectUser(user, token);
  watchSocket(name, client);
  return { connection_id: first.connection_id, me: first.me };
}

/** A TCP proxy in front of `backends`, as a load balancer with health checks would act. */
function balancer({ backends }) {
  const targets = backends.map((b) => {
    const u = new URL(b);
    return { host: u.hostname, port: Number(u.port) };
  });
  const server = net.createServer((down) => {
    down.pause();
    down.on('error', () => {});
    const attempt = (i) => {
      if (i >= targets.length) {
        down.destroy();
        return;
      }
      const up = net.connect(targets[i]);
      let open = false;
      up.on('error', () => {
        if (!open) attempt(i + 1);
      });
      up.once('connect', () => {
        open = true;
        up.on('close', () => down.destroy());
        down.on('close', () => up.destroy());
        down.pipe(up);
        up.pipe(down);
        down.resume();
      });
    };
    attempt(0);
  });
  balancers.push(server);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      resolve({ url: `http://127.0.0.1:${server.address().port}` });
    });
  });
}

const ops = {
  connect,
  user: ({ client }) => clientNamed(client).user,
  query_users: async ({ client, filter, sort, options }) =>
    (await clientNamed(client).queryUsers(filter, sort || [], options || {})).users,
  disconnect: async ({ client }) => {
    await clientNamed(client).disconnectUser(1000);
    return true;
  },
  server: async ({ url, method, args }) => {
    const server = serverAt(url);
    if (typeof server[method] !== 'function') throw new Error(`no server method ${method}`);
    return server[method](...(args || []));
  },
  balancer,
  exit: () => {
    for (const b of balancers) b.close();
    process.exit(0);
  },
};

function describe(err) {
  const out = { message: String((err && err.message) || err) };
  if (err && err.code !== undefined) out.code = err.code;
  if (err && err.status !== undefined) out.status = err.status;
  if (err && err.response && err.response.data !== undefined) out.body = err.response.data;
  return out;
}

async function run(line) {
  let command;
  try {
    command = JSON.parse(line);
  } catch (err) {
    emit({ id: null, error: { message: `not JSON: ${line}` } });
    return;
  }
  const op = ops[command.op];
  if (!op) {
    emit({ id: command.id, error: { message: `unknown op ${command.op}` } });
    return;
  }
  try {
    const ok = await op(command);
    emit({ id: command.id, ok: ok === undefined ? null : ok });
  } catch (err) {
    emit({ id: command.id, error: describe(err) });
  }
}

// A promise the SDK leaves unhandled (say, a retry's failure) would end Node's process; it is
// reported instead, and shows among the lines a failing test prints.
process.on('unhandledRejection', (err) => emit({ unhandled: describe(err) }));

// A test that ends closes stdin: nothing is left running behind it.
const input = readline.createInterface({ input: process.stdin });
input.on('line', (line) => {
  if (line.trim()) run(line);
});
input.on('close', () => ops.exit());

emit({ ready: true, sdk: sdkVersion, node: process.version });

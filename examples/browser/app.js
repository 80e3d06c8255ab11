// Connects one user to chat-gateway with the official stream-chat SDK and shows who they
// are, whether the connection is live, and their name as it changes server-side.
import { StreamChat } from 'stream-chat';

const $ = (id) => document.getElementById(id);

function setOnline(online, text) {
  $('presence').dataset.online = String(online);
  $('status').textContent = text ?? (online ? 'online' : 'offline');
}

function showUser(user) {
  $('user-id').textContent = user.id;
  $('user-name').textContent = user.name ?? '';
  $('user-role').textContent = user.role ?? '';
}

function showError(message) {
  $('error').textContent = message;
}

/** Error messages from connectUser are JSON strings; pull out code and message if so. */
function describe(err) {
  try {
    const { code, message } = JSON.parse(err.message);
    return `code ${code}: ${message}`;
  } catch (_) {
    return err.message;
  }
}

async function main() {
  const params = new URLSearchParams(window.location.search);
  const apiKey = params.get('api_key');
  const baseURL = params.get('base_url');
  const userId = params.get('user_id');
  const token = params.get('token');
  if (!apiKey || !baseURL || !userId || !token) {
    setOnline(false, 'not connected');
    showError('Missing query parameters: api_key, base_url, user_id and token are required.');
    return;
  }

  // The SDK talks to `${baseURL}/connect` (WebSocket) and `${baseURL}/users` etc. (REST).
  const client = new StreamChat(apiKey, { baseURL });

  client.on('connection.changed', (event) => setOnline(event.online));
  client.on('user.updated', (event) => {
    if (event.user?.id === client.userID) showUser(client.user);
  });
  // The gateway ends the connection for good on these; the SDK will not reconnect.
  client.on('user.deactivated', () => setOnline(false, 'offline (deactivated)'));
  client.on('user.deleted', () => setOnline(false, 'offline (deleted)'));
  client.on('connection.error', (event) => {
    setOnline(false, 'offline');
    showError(`code ${event.error?.code}: ${event.error?.message}`);
  });

  try {
    const { me } = await client.connectUser({ id: userId }, token);
    showUser(me);
    setOnline(true);
  } catch (err) {
    setOnline(false, 'connection refused');
    showError(describe(err));
  }

  window.addEventListener('beforeunload', () => client.disconnectUser());
  // Exposed for experiments from the developer console.
  window.chatClient = client;
}

main();

'use strict';
// A tiny static file server for the browser example: `/node_modules/...` from this
// package's node_modules, everything else from examples/browser. Listens on its own port,
// so the page is cross-origin to the gateway, as it would be in production.

const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');

const CONTENT_TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.map': 'application/json',
};

const ROOTS = {
  page: path.resolve(__dirname, '..', '..', '..', '..', 'examples', 'browser'),
  modules: path.resolve(__dirname, '..', 'node_modules'),
};

function resolveFile(urlPath) {
  const decoded = decodeURIComponent(urlPath);
  const [root, rest] = decoded.startsWith('/node_modules/')
    ? [ROOTS.modules, decoded.slice('/node_modules/'.length)]
    : [ROOTS.page, decoded === '/' ? 'index.html' : decoded.slice(1)];
  const file = path.resolve(root, rest);
  // Refuse anything that escapes its root.
  if (file !== root && !file.startsWith(root + path.sep)) return null;
  return file;
}

/** Start the server on 127.0.0.1 and an OS-chosen port; resolves with {url, close}. */
function startStaticServer() {
  const server = http.createServer((req, res) => {
    const file = resolveFile(new URL(req.url, 'http://x').pathname);
    if (req.method !== 'GET' || !file) {
      res.writeHead(file ? 405 : 403).end();
      return;
    }
    fs.readFile(file, (err, body) => {
      if (err) {
        res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found');
        return;
      }
      const type = CONTENT_TYPES[path.extname(file)] || 'application/octet-stream';
      res.writeHead(200, { 'Content-Type': type, 'Cache-Control': 'no-store' }).end(body);
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      resolve({
        url: `http://127.0.0.1:${port}`,
        close: () => new Promise((done) => server.close(() => done())),
      });
    });
  });
}

module.exports = { startStaticServer };

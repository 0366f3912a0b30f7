// SPDX-License-Identifier: MIT
// ws_node_server: Node's `ws` package as a WebSocket echo server, a peer of perf/run_ws.
//
//   node perf/ws_node_server.js PORT          (listens on 127.0.0.1:PORT, any path)
//
// `ws` is loaded from $SQUALL_NPM_DIR/node_modules (default /var/cache/squall-npm), as the peer
// tests do. ws uses the optional native `bufferutil` addon (masking and unmasking frames of 48
// bytes or more / 32 or more) when it can require it from there, unless WS_NO_BUFFER_UTIL=1 is
// set (ws 8's lib/buffer-util.js); the line printed once listening says which, so perf/run_ws
// can tell the two rows apart:
//
//   ws_node_server listening on 127.0.0.1:PORT (ws 8.23.1, node v20.20.2, bufferutil on)
//
// Settings: permessage-deflate off (ws's server default, set explicitly), maxPayload 16 MiB,
// listen backlog 1024, everything else ws's default (UTF-8 validation of text included). Each
// message is sent back as it came, text as text, binary as binary. SIGTERM ends it.
"use strict";

const path = require("path");
const npmDir = process.env.SQUALL_NPM_DIR || "/var/cache/squall-npm";
const wsDir = path.join(npmDir, "node_modules", "ws");
const WebSocket = require(wsDir);

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error("usage: node ws_node_server.js PORT");
  process.exit(2);
}

// Whether ws found bufferutil: ws requires it by name from its own directory.
let bufferutil = "off";
if (!process.env.WS_NO_BUFFER_UTIL) {
  try {
    require(require.resolve("bufferutil", { paths: [wsDir] }));
    bufferutil = "on";
  } catch (e) {
    bufferutil = "off (not installed)";
  }
}
const version = require(path.join(wsDir, "package.json")).version;

const server = new WebSocket.WebSocketServer({
  host: "127.0.0.1",
  port,
  backlog: 1024,
  perMessageDeflate: false,
  maxPayload: 16 << 20,
});

server.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on("error", () => ws.terminate());
});

server.on("listening", () => {
  console.log(`ws_node_server listening on 127.0.0.1:${port} (ws ${version}, node ` +
              `${process.version}, bufferutil ${bufferutil})`);
});

process.on("SIGTERM", () => process.exit(0));

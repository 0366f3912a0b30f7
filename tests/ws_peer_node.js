// SPDX-License-Identifier: MIT
// Node's `ws` package as a client of squall's WebSocket server (tests/ws_peers_test.cpp).
//
//   node ws_peer_node.js URL [--no-compression]
//
// `ws` is loaded from $SQUALL_NPM_DIR/node_modules (default /var/cache/squall-npm, where
// tools/dev installs it): the test never downloads anything. Checks subprotocols, permessage-
// deflate, text and binary messages of many sizes, a ping, then closes with 4000 "bye". Prints
// "OK" when every check passed, exits 1 otherwise.
"use strict";

const path = require("path");
const npmDir = process.env.SQUALL_NPM_DIR || "/var/cache/squall-npm";
const WebSocket = require(path.join(npmDir, "node_modules", "ws"));

const url = process.argv[2];
const compression = !process.argv.includes("--no-compression");

function fail(why) {
  console.error("FAIL: " + why);
  process.exit(1);
}
setTimeout(() => fail("timed out"), 30000).unref();

function payloads() {
  const out = [];
  for (const n of [0, 1, 125, 126, 127, 65535, 65536, 1 << 20]) {
    let s = "";
    for (let i = 0; i < n; i++) s += String.fromCharCode(97 + (i % 26));
    out.push(s);
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = i % 251;
    out.push(b);
  }
  out.push("κόσμε – UTF-8 ✓ 𝄞");
  return out;
}

const ws = new WebSocket(url, ["chat.v1", "chat.v2"], {
  perMessageDeflate: compression,
  maxPayload: 16 << 20,
});

const inbox = [];
let waiting = null;
ws.on("message", (data, isBinary) => {
  const m = { data, isBinary };
  if (waiting) {
    const w = waiting;
    waiting = null;
    w(m);
  } else {
    inbox.push(m);
  }
});
function next() {
  if (inbox.length) return Promise.resolve(inbox.shift());
  return new Promise((resolve) => (waiting = resolve));
}

ws.on("error", (e) => fail("error: " + e.message));
ws.on("open", async () => {
  if (ws.protocol !== "chat.v2") fail("subprotocol " + ws.protocol);
  if (ws.extensions.includes("permessage-deflate") !== compression)
    fail("extensions '" + ws.extensions + "'");
  for (const p of payloads()) {
    const binary = Buffer.isBuffer(p);
    ws.send(p, { binary });
    const m = await next();
    if (m.isBinary !== binary) fail("type of a " + p.length + "-byte message");
    const got = binary ? m.data : m.data.toString("utf8");
    if (binary ? !got.equals(p) : got !== p) fail("echo of a " + p.length + "-byte message");
  }
  await new Promise((resolve) => {
    ws.once("pong", (data) => {
      if (data.toString() !== "are you there") fail("pong payload");
      resolve();
    });
    ws.ping("are you there");
  });
  ws.on("close", (code, reason) => {
    if (code !== 4000) fail("close " + code + " " + reason);
    console.log("OK");
    process.exit(0);
  });
  ws.close(4000, "bye");
});

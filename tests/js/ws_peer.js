// A WebSocket peer for sipdisp's integration tests, built on the `ws` package.
//
//   node ws_peer.js URL [--protocol sip]... [--ca FILE] [--lifetime SECONDS]
//                       [--origin ORIGIN] [--no-auto-pong]
//
// It connects to URL offering the given subprotocols and reports, one JSON
// object per line on stdout, what happens on the wire:
//   {"event":"upgrade","status":101,"headers":{...}}   the handshake answer
//   {"event":"open","protocol":"sip"}
//   {"event":"message","data":"...","binary":false}    one SIP message
//   {"event":"rejected","status":400,"headers":{...}} the server refused the upgrade
//   {"event":"error","message":"..."}
//   {"event":"close","code":1000,"reason":""}
//   {"event":"ping","data":"..."}                    a ping from the server
// Each line read on stdin is a command: {"send":"SIP text"} or {"close":true}.
// The process exits after the socket closes, and after --lifetime seconds in
// any case (default 30), so a test can never hang on it.
"use strict";

const fs = require("fs");
const readline = require("readline");
const WebSocket = require("ws");

function parseArgs(argv) {
  const opts = { url: null, protocols: [], ca: null, lifetime: 30, origin: null, autoPong: true };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--protocol") opts.protocols.push(argv[++i]);
    else if (arg === "--ca") opts.ca = argv[++i];
    else if (arg === "--lifetime") opts.lifetime = Number(argv[++i]);
    else if (arg === "--origin") opts.origin = argv[++i];
    else if (arg === "--no-auto-pong") opts.autoPong = false;
    else opts.url = arg;
  }
  return opts;
}

function report(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const opts = parseArgs(process.argv.slice(2));
// --no-auto-pong stands for a dead peer: pings arrive and are never answered
const wsOptions = { handshakeTimeout: 5000, autoPong: opts.autoPong };
if (opts.origin) wsOptions.origin = opts.origin;
if (opts.ca) wsOptions.ca = fs.readFileSync(opts.ca);

const lifetime = setTimeout(() => {
  report({ event: "error", message: "lifetime exceeded" });
  process.exit(3);
}, opts.lifetime * 1000);

const ws = new WebSocket(opts.url, opts.protocols, wsOptions);

ws.on("upgrade", (res) => report({ event: "upgrade", status: res.statusCode, headers: res.headers }));
ws.on("ping", (data) => report({ event: "ping", data: data.toString("utf8") }));
ws.on("open", () => report({ event: "open", protocol: ws.protocol }));
ws.on("message", (data, isBinary) =>
  report({ event: "message", data: data.toString("utf8"), binary: isBinary }));
ws.on("unexpected-response", (req, res) => {
  report({ event: "rejected", status: res.statusCode, headers: res.headers });
  req.destroy();
  finish(0);
});
ws.on("error", (err) => report({ event: "error", message: String(err && err.message) }));
ws.on("close", (code, reason) => {
  report({ event: "close", code: code, reason: reason.toString() });
  finish(0);
});

function finish(code) {
  clearTimeout(lifetime);
  // let stdout drain before leaving
  process.stdout.write("", () => process.exit(code));
}

const input = readline.createInterface({ input: process.stdin });
input.on("line", (line) => {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (err) {
    report({ event: "error", message: "bad command: " + line });
    return;
  }
  if (cmd.send !== undefined) {
    ws.send(cmd.send, (err) => {
      if (err) report({ event: "error", message: "send failed: " + err.message });
    });
  } else if (cmd.close) {
    ws.close(1000);
  }
});
input.on("close", () => {
  // stdin closed: the test is done with us
  if (ws.readyState === WebSocket.OPEN) ws.close(1000);
  else finish(0);
});

// A JsSIP softphone in Node for sipdisp's integration tests (tests/integration/test_jssip.py).
//
//   node jssip_peer.js --ws ws://127.0.0.1:PORT --uri sip:alice@example.com --password PW
//                      [--reject 486] [--lifetime SECONDS]
//
// The real JsSIP library runs over a small Socket adapter on the `ws`
// package (Node has no browser WebSocket). There is no WebRTC in Node: a
// stub RTCPeerConnection lets JsSIP accept an incoming INVITE as a session,
// which it then rejects with --reject's status before any media is needed.
//
// One JSON object per line on stdout:
//   {"event":"connected"} {"event":"registered","contact":"..."}
//   {"event":"registrationFailed","status":403,"cause":"..."}
//   {"event":"invite","from":"...","ruri":"...","via":[...],"recordRoute":[...]}
//   {"event":"sessionEnded","originator":"local","cause":"..."}
//   {"event":"messageSucceeded","status":200} {"event":"messageFailed","status":..,"cause":".."}
//   {"event":"error","message":"..."} {"event":"exit"}
// Commands on stdin, one JSON object per line:
//   {"message":{"target":"sip:bob@example.com","body":"hello"}}   {"stop":true}
// The process exits when stdin closes, on {"stop":true}, and after
// --lifetime seconds in any case (default 30), so a test cannot hang on it.
"use strict";

const readline = require("readline");
const WebSocket = require("ws");

// JsSIP looks for window.RTCPeerConnection before it creates a session for
// an incoming INVITE; a rejected session never constructs one.
globalThis.window = globalThis;
globalThis.RTCPeerConnection = class RTCPeerConnection {
  constructor() {
    throw new Error("no WebRTC in Node");
  }
};

const JsSIP = require("jssip");

function report(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function parseArgs(argv) {
  const opts = { ws: null, uri: null, password: null, reject: 486, lifetime: 30 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--ws") opts.ws = argv[++i];
    else if (arg === "--uri") opts.uri = argv[++i];
    else if (arg === "--password") opts.password = argv[++i];
    else if (arg === "--reject") opts.reject = Number(argv[++i]);
    else if (arg === "--lifetime") opts.lifetime = Number(argv[++i]);
  }
  return opts;
}

// JsSIP's Socket interface (lib/Socket.js) over the `ws` package.
class WsSocket {
  constructor(url) {
    const parsed = new URL(url);
    this._url = url;
    this._ws = null;
    this._sip_uri = `sip:${parsed.hostname}${parsed.port ? `:${parsed.port}` : ""};transport=ws`;
    this._via_transport = parsed.protocol === "wss:" ? "WSS" : "WS";
  }

  get via_transport() { return this._via_transport; }
  set via_transport(value) { this._via_transport = value.toUpperCase(); }
  get sip_uri() { return this._sip_uri; }
  get url() { return this._url; }

  connect() {
    if (this.isConnected() || this.isConnecting()) return;
    const ws = new WebSocket(this._url, "sip", { handshakeTimeout: 5000 });
    this._ws = ws;
    ws.on("open", () => this.onconnect());
    ws.on("close", (code, reason) => {
      if (this._ws === ws) this._ws = null;
      this.ondisconnect(code !== 1000, code, reason.toString());
    });
    ws.on("message", (data, isBinary) => this.ondata(isBinary ? data : data.toString("utf8")));
    ws.on("error", (err) => report({ event: "error", message: String(err && err.message) }));
  }

  disconnect() {
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      ws.removeAllListeners("open");
      ws.removeAllListeners("message");
      ws.close();
    }
  }

  send(message) {
    if (!this.isConnected()) return false;
    this._ws.send(message);
    return true;
  }

  isConnected() { return !!this._ws && this._ws.readyState === WebSocket.OPEN; }
  isConnecting() { return !!this._ws && this._ws.readyState === WebSocket.CONNECTING; }
}

const opts = parseArgs(process.argv.slice(2));
let ua = null;

function finish(code) {
  report({ event: "exit" });
  try {
    if (ua) ua.stop();
  } catch (err) {
    // stopping is best effort
  }
  setTimeout(() => process.exit(code), 200);
}

const lifetime = setTimeout(() => {
  report({ event: "error", message: "lifetime exceeded" });
  finish(3);
}, opts.lifetime * 1000);
lifetime.unref();

ua = new JsSIP.UA({
  sockets: [new WsSocket(opts.ws)],
  uri: opts.uri,
  password: opts.password,
  register: true,
  register_expires: 600,
  session_timers: false,
  user_agent: "JsSIP-node (sipdisp tests)",
  connection_recovery_min_interval: 1,
  connection_recovery_max_interval: 2,
});

ua.on("connected", () => report({ event: "connected" }));
ua.on("disconnected", () => report({ event: "disconnected" }));
ua.on("registered", (e) => report({
  event: "registered",
  status: e.response.status_code,
  contact: e.response.getHeaders("contact"),
}));
ua.on("registrationFailed", (e) => report({
  event: "registrationFailed",
  status: e.response ? e.response.status_code : null,
  cause: e.cause,
}));
ua.on("newRTCSession", (e) => {
  if (e.originator !== "remote") return;
  const req = e.request;
  report({
    event: "invite",
    from: req.from.uri.toString(),
    ruri: req.ruri.toString(),
    via: req.getHeaders("via"),
    recordRoute: req.getHeaders("record-route"),
  });
  e.session.on("ended", (ev) => report({ event: "sessionEnded", originator: ev.originator, cause: ev.cause }));
  e.session.on("failed", (ev) => report({ event: "sessionFailed", originator: ev.originator, cause: ev.cause }));
  e.session.terminate({ status_code: opts.reject });
});

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (err) {
    report({ event: "error", message: `bad command: ${line}` });
    return;
  }
  if (cmd.message) {
    ua.sendMessage(cmd.message.target, cmd.message.body || "hello", {
      eventHandlers: {
        succeeded: (e) => report({ event: "messageSucceeded", status: e.response.status_code }),
        failed: (e) => report({
          event: "messageFailed",
          status: e.response ? e.response.status_code : null,
          cause: e.cause,
        }),
      },
    });
  } else if (cmd.stop) {
    finish(0);
  }
});
rl.on("close", () => finish(0));

ua.start();

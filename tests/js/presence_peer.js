// A JsSIP presence client in Node for sipdisp's integration tests
// (tests/integration/test_presence_jssip.py): a watcher through JsSIP's own
// Subscriber (RFC 6665) and a presentity publishing PIDF (RFC 3903).
//
//   node presence_peer.js --ws ws://127.0.0.1:PORT --uri sip:alice@example.com
//                         [--password PW] [--no-register] [--lifetime SECONDS]
//
// JsSIP 3.13.8 has a Subscriber but no Publisher class, so PUBLISH goes
// through the same internals its Subscriber and Message use: an
// OutgoingRequest sent by a RequestSender (JsSIP's non-INVITE client
// transaction and its digest answer to 401/407). The publisher keeps the
// SIP-ETag of its last 2xx and sends it as SIP-If-Match, as RFC 3903 4.4 says
// a modify/remove must.
//
// One JSON object per line on stdout:
//   {"event":"connected"} {"event":"registered","status":200,"contact":[...]}
//   {"event":"registrationFailed","status":..,"cause":".."}
//   {"event":"subscribeAccepted"} {"event":"subscribeActive"} {"event":"subscribePending"}
//   {"event":"notify","body":"...","contentType":"...","subscriptionState":"active;expires=600",
//    "callId":"...","cseq":N,"fromTag":"...","toTag":"..."}
//   {"event":"subscribeTerminated","code":6,"codeName":"FINAL_NOTIFY_RECEIVED","reason":"timeout"}
//   {"event":"publishResponse","status":200,"etag":"...","expires":"600"}
//   {"event":"publishFailed","cause":"timeout"|"transport"}
//   {"event":"error","message":"..."} {"event":"exit"}
// Commands on stdin, one JSON object per line:
//   {"subscribe":{"target":"sip:bob@example.com","event":"presence",
//                 "accept":"application/pidf+xml","expires":600}}
//   {"unsubscribe":true}
//   {"publish":{"target":"sip:bob@example.com","event":"presence","expires":600,
//               "contentType":"application/pidf+xml","body":"<presence .../>"}}
//   {"unpublish":true}      (Expires: 0 with SIP-If-Match: the last ETag)
//   {"stop":true}
// The process exits when stdin closes, on {"stop":true}, and after
// --lifetime seconds in any case (default 40), so a test cannot hang on it.
"use strict";

const readline = require("readline");
const WebSocket = require("ws");

const JsSIP = require("jssip");
const SIPMessage = require("jssip/lib/SIPMessage");
const RequestSender = require("jssip/lib/RequestSender");
const Subscriber = require("jssip/lib/Subscriber");

const CODE_NAMES = {};
for (const [name, value] of Object.entries(Subscriber.C)) {
  if (!name.startsWith("STATE_") && name !== "DEFAULT_EXPIRES_SEC") CODE_NAMES[value] = name;
}

function report(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function parseArgs(argv) {
  const opts = { ws: null, uri: null, password: null, register: true, lifetime: 40 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--ws") opts.ws = argv[++i];
    else if (arg === "--uri") opts.uri = argv[++i];
    else if (arg === "--password") opts.password = argv[++i];
    else if (arg === "--no-register") opts.register = false;
    else if (arg === "--lifetime") opts.lifetime = Number(argv[++i]);
  }
  return opts;
}

// JsSIP's Socket interface (lib/Socket.js) over the `ws` package, as in jssip_peer.js.
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

// RFC 3903 event publication agent on JsSIP's transaction layer.
class Publisher {
  constructor(ua) {
    this._ua = ua;
    this._etag = null;
    this._last = null;
  }

  publish({ target, event = "presence", expires = 600, contentType = "application/pidf+xml", body }) {
    this._last = { target, event };
    const headers = [`Event: ${event}`, `Expires: ${expires}`];
    if (this._etag) headers.push(`SIP-If-Match: ${this._etag}`);
    if (body) headers.push(`Content-Type: ${contentType}`);
    this._send(target, headers, body || null);
  }

  unpublish() {
    if (!this._last || !this._etag) {
      report({ event: "error", message: "unpublish before any accepted publish" });
      return;
    }
    const headers = [`Event: ${this._last.event}`, "Expires: 0", `SIP-If-Match: ${this._etag}`];
    this._send(this._last.target, headers, null);
  }

  _send(target, headers, body) {
    // JsSIP's Constants have no PUBLISH: the method is spelled out
    const request = new SIPMessage.OutgoingRequest(
      "PUBLISH", this._ua.normalizeTarget(target), this._ua, {}, headers, body);
    const sender = new RequestSender(this._ua, request, {
      onRequestTimeout: () => report({ event: "publishFailed", cause: "timeout" }),
      onTransportError: () => report({ event: "publishFailed", cause: "transport" }),
      onReceiveResponse: (response) => {
        if (response.status_code < 200) return;
        const etag = response.getHeader("sip-etag") || null;
        if (response.status_code < 300 && etag) this._etag = etag;
        if (response.status_code === 412) this._etag = null;  // RFC 3903 4.4: start afresh
        report({
          event: "publishResponse",
          status: response.status_code,
          reason: response.reason_phrase,
          etag,
          expires: response.getHeader("expires") || null,
        });
      },
    });
    sender.send();
  }
}

const opts = parseArgs(process.argv.slice(2));
let ua = null;
let subscriber = null;

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
  register: opts.register,
  register_expires: 600,
  session_timers: false,
  user_agent: "JsSIP-node presence (sipdisp tests)",
  connection_recovery_min_interval: 1,
  connection_recovery_max_interval: 2,
});
const publisher = new Publisher(ua);

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

function subscribe({ target, event = "presence", accept = "application/pidf+xml", expires = 600 }) {
  subscriber = ua.subscribe(target, event, accept, { expires });
  subscriber.on("accepted", () => report({ event: "subscribeAccepted" }));
  subscriber.on("active", () => report({ event: "subscribeActive" }));
  subscriber.on("pending", () => report({ event: "subscribePending" }));
  // JsSIP emits "notify" only for NOTIFYs with a body; the final NOTIFY of an
  // unsubscribe may have none, so every NOTIFY of the dialog is reported here,
  // before JsSIP's Subscriber answers it.
  const receive = subscriber.receiveRequest.bind(subscriber);
  subscriber.receiveRequest = (request) => {
    if (request.method === "NOTIFY") {
      report({
        event: "notify",
        body: request.body || "",
        contentType: request.getHeader("content-type") || null,
        subscriptionState: request.getHeader("subscription-state") || null,
        callId: request.call_id,
        cseq: request.cseq,
        fromTag: request.from_tag,
        toTag: request.to_tag,
      });
    }
    receive(request);
  };
  subscriber.on("terminated", (code, reason) => report({
    event: "subscribeTerminated",
    code,
    codeName: CODE_NAMES[code] || String(code),
    reason: reason || null,
  }));
  subscriber.subscribe();
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (err) {
    report({ event: "error", message: `bad command: ${line}` });
    return;
  }
  try {
    if (cmd.subscribe) subscribe(cmd.subscribe);
    else if (cmd.unsubscribe) subscriber.terminate();
    else if (cmd.publish) publisher.publish(cmd.publish);
    else if (cmd.unpublish) publisher.unpublish();
    else if (cmd.stop) finish(0);
  } catch (err) {
    report({ event: "error", message: `${Object.keys(cmd)[0]}: ${err && err.message}` });
  }
});
rl.on("close", () => finish(0));

ua.start();

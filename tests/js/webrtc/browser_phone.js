// A WebRTC softphone in headless Chromium for sipdisp's integration tests
// (tests/integration/test_webrtc.py).
//
//   node browser_phone.js --ws ws://127.0.0.1:PORT --uri sip:alice@example.com
//                         --password PW [--chromium /usr/bin/chromium] [--lifetime SECONDS]
//
// It serves phone.html, phone.js and JsSIP's browser bundle (bundle.js) on
// http://127.0.0.1:<free port> (localhost is a secure context, so getUserMedia
// is allowed), starts the system Chromium through puppeteer-core (which
// downloads nothing), opens the page and registers. The page answers every
// incoming call; {"call": URI} makes one.
//
// One JSON object per line on stdout (the page's reports, see phone.js, plus):
//   {"event":"ready","page":"http://127.0.0.1:PORT/","chromium":"HeadlessChrome/..."}
//   {"event":"pageError","message":"..."} {"event":"error","message":"..."} {"event":"exit"}
// Commands on stdin, one JSON object per line:
//   {"call":"sip:fs@example.com"}  {"stats":true}  {"info":true}  {"hangup":true}
//   {"stop":true}
// The process exits when stdin closes, on {"stop":true}, and after --lifetime
// seconds in any case (default 60), closing Chromium, so a test cannot hang on it.
"use strict";

const fs = require("fs");
const http = require("http");
const path = require("path");
const readline = require("readline");
const puppeteer = require("puppeteer-core");
const { bundle } = require("./bundle");

function report(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function parseArgs(argv) {
  const opts = { ws: null, uri: null, password: null, chromium: "/usr/bin/chromium", lifetime: 60 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--ws") opts.ws = argv[++i];
    else if (arg === "--uri") opts.uri = argv[++i];
    else if (arg === "--password") opts.password = argv[++i];
    else if (arg === "--chromium") opts.chromium = argv[++i];
    else if (arg === "--lifetime") opts.lifetime = Number(argv[++i]);
  }
  return opts;
}

// The three files the page needs, and nothing else.
function startServer() {
  const files = {
    "/": ["text/html", fs.readFileSync(path.join(__dirname, "phone.html"))],
    "/phone.js": ["text/javascript", fs.readFileSync(path.join(__dirname, "phone.js"))],
    "/jssip.js": ["text/javascript",
      Buffer.from(bundle("jssip", "JsSIP", path.join(__dirname, "..", "node_modules")))],
  };
  const server = http.createServer((req, res) => {
    const file = files[req.url];
    if (req.url === "/favicon.ico") {
      res.writeHead(204).end();  // the browser asks; an error would only be noise
      return;
    }
    if (req.method !== "GET" || !file) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "Content-Type": file[0], "Cache-Control": "no-store" }).end(file[1]);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}

const opts = parseArgs(process.argv.slice(2));
let browser = null;
let page = null;
let server = null;
let finishing = false;

async function finish(code) {
  if (finishing) return;
  finishing = true;
  report({ event: "exit" });
  const hardStop = setTimeout(() => process.exit(code), 5000);
  try {
    if (page) await page.evaluate(() => window.phone && window.phone.stop()).catch(() => {});
    if (browser) await browser.close();
  } catch (err) {
    // closing is best effort; the hard stop above still ends the process
  }
  if (server) server.close();
  clearTimeout(hardStop);
  process.exit(code);
}

const lifetime = setTimeout(() => {
  report({ event: "error", message: "lifetime exceeded" });
  finish(3);
}, opts.lifetime * 1000);
lifetime.unref();

async function main() {
  server = await startServer();
  const url = `http://127.0.0.1:${server.address().port}/`;
  browser = await puppeteer.launch({
    executablePath: opts.chromium,
    headless: true,
    args: [
      "--headless=new",
      "--no-sandbox",
      // CI containers often have a 64 MB /dev/shm; Chromium then writes to /tmp instead
      "--disable-dev-shm-usage",
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream",
      // plain host candidates, not mDNS names nobody on loopback resolves, and
      // 127.0.0.1 among them (Chromium leaves loopback out by default), so
      // ICE with rtpengine on 127.0.0.1 works on a machine with only lo
      "--disable-features=WebRtcHideLocalIpsWithMdns",
      "--allow-loopback-in-peer-connection",
    ],
  });
  page = await browser.newPage();
  page.on("pageerror", (err) => report({
    event: "pageError", message: String(err && err.message),
  }));
  page.on("console", (msg) => {
    if (msg.type() === "error") report({ event: "console", text: msg.text() });
  });
  await page.exposeFunction("report", (obj) => report(obj));
  await page.goto(url, { waitUntil: "load", timeout: 20000 });
  report({ event: "ready", page: url, chromium: await browser.version() });
  await page.evaluate((o) => window.phone.start(o),
    { ws: opts.ws, uri: opts.uri, password: opts.password });

  const rl = readline.createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    if (!line.trim()) return;
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch (err) {
      report({ event: "error", message: `bad command: ${line}` });
      return;
    }
    let action = null;
    if (cmd.call) action = page.evaluate((t) => window.phone.call(t), cmd.call);
    else if (cmd.info) action = page.evaluate(() => window.phone.info());
    else if (cmd.stats) action = page.evaluate(() => window.phone.stats());
    else if (cmd.hangup) action = page.evaluate(() => window.phone.hangup());
    else if (cmd.stop) finish(0);
    if (action) {
      action.catch((err) => report({ event: "error", message: String(err && err.message) }));
    }
  });
  rl.on("close", () => finish(0));
}

main().catch((err) => {
  report({ event: "error", message: String(err && err.stack || err) });
  finish(2);
});

// The softphone page's logic: JsSIP 3.13.8 (bundled by bundle.js) in Chromium,
// registering over WebSocket and making or answering one audio call with
// real WebRTC (the fake microphone of --use-fake-device-for-media-stream).
//
// browser_phone.js drives it through window.phone (start, call, stats, info,
// hangup, stop) and receives everything it reports through window.report (a
// function puppeteer exposes to the page), one object per event:
//   connected, disconnected, registered {status, contact}, registrationFailed,
//   invite {from, ruri, callId, offerSdp} (answered at once),
//   sending {callId, offerSdp}, sdp {originator, type, sdp},
//   setRemoteDescriptionFailed {message}, progress {status}, accepted,
//   confirmed {localSdp, remoteSdp, signalingState} (the peer connection's own),
//   connectionState {state}, stats {packetsSent, packetsReceived, dtlsState,
//   srtpCipher}, ended {originator, cause}, failed {originator, cause, status}.
"use strict";

(function () {
  let ua = null;
  let session = null;

  function report(obj) {
    window.report(obj);
  }

  function sdpOf(desc) {
    return desc ? desc.sdp : null;
  }

  // The peer connection's (ICE + DTLS) state now and at every change. An
  // outgoing session creates its RTCPeerConnection inside ua.call(), before
  // the page can listen for JsSIP's "peerconnection" event, so this starts
  // from the session's confirmation and reports the state reached so far.
  function watchConnection(pc) {
    const tell = () => report({ event: "connectionState", state: pc.connectionState });
    pc.addEventListener("connectionstatechange", tell);
    tell();
  }

  // Counters of the media that really flowed: RTP packets the browser sent
  // and received (SRTP on the wire), and the DTLS state of its transport.
  async function mediaStats() {
    const out = { event: "stats", packetsSent: 0, packetsReceived: 0, dtlsState: null };
    if (!session || !session.connection) return out;
    const stats = await session.connection.getStats();
    stats.forEach((s) => {
      if (s.type === "outbound-rtp" && s.kind === "audio") out.packetsSent += s.packetsSent || 0;
      if (s.type === "inbound-rtp" && s.kind === "audio") {
        out.packetsReceived += s.packetsReceived || 0;
      }
      if (s.type === "transport") {
        out.dtlsState = s.dtlsState;
        out.srtpCipher = s.srtpCipher || null;
      }
    });
    return out;
  }

  // Reports on the session's state and, once confirmed, the SDP on each side
  // as the browser's RTCPeerConnection holds it (what WebRTC really used).
  function watch(sess, direction) {
    session = sess;
    // every SDP JsSIP is about to apply or send, and why applying one failed
    sess.on("sdp", (e) => report({
      event: "sdp", originator: e.originator, type: e.type, sdp: e.sdp,
    }));
    sess.on("peerconnection:setremotedescriptionfailed", (err) => report({
      event: "setRemoteDescriptionFailed", message: String(err && (err.message || err)),
    }));
    sess.on("progress", (e) => report({
      event: "progress", status: e.response ? e.response.status_code : null,
    }));
    sess.on("accepted", () => report({ event: "accepted", direction }));
    sess.on("confirmed", () => {
      const pc = sess.connection;
      report({
        event: "confirmed",
        direction,
        localSdp: sdpOf(pc.localDescription),
        remoteSdp: sdpOf(pc.remoteDescription),
        signalingState: pc.signalingState,
      });
      watchConnection(pc);
    });
    sess.on("ended", (e) => report({ event: "ended", originator: e.originator, cause: e.cause }));
    sess.on("failed", (e) => report({
      event: "failed", originator: e.originator, cause: e.cause,
      status: e.message && e.message.status_code ? e.message.status_code : null,
    }));
  }

  window.phone = {
    start(opts) {
      const socket = new JsSIP.WebSocketInterface(opts.ws);
      ua = new JsSIP.UA({
        sockets: [socket],
        uri: opts.uri,
        password: opts.password,
        register: true,
        register_expires: 600,
        session_timers: false,
        user_agent: "JsSIP-chromium (sipdisp tests)",
        connection_recovery_min_interval: 1,
        connection_recovery_max_interval: 2,
      });
      ua.on("connected", () => report({ event: "connected" }));
      ua.on("disconnected", () => report({ event: "disconnected" }));
      ua.on("registered", (e) => report({
        event: "registered", status: e.response.status_code,
        contact: e.response.getHeaders("contact"),
      }));
      ua.on("registrationFailed", (e) => report({
        event: "registrationFailed",
        status: e.response ? e.response.status_code : null, cause: e.cause,
      }));
      ua.on("newRTCSession", (e) => {
        if (e.originator !== "remote") return;
        const req = e.request;
        report({
          event: "invite", from: req.from.uri.toString(), ruri: req.ruri.toString(),
          callId: req.call_id, offerSdp: req.body,
        });
        watch(e.session, "incoming");
        e.session.answer({ mediaConstraints: { audio: true, video: false } });
      });
      ua.start();
    },

    call(target) {
      const sess = ua.call(target, {
        mediaConstraints: { audio: true, video: false },
        pcConfig: { iceServers: [] },
        eventHandlers: {
          // the INVITE's body is the browser's own offer, as it went to sipdisp
          sending: (e) => report({
            event: "sending", callId: e.request.call_id, offerSdp: e.request.body,
          }),
        },
      });
      watch(sess, "outgoing");
    },

    stats() {
      mediaStats().then(report, (err) => report({ event: "error", message: String(err) }));
    },

    // an in-dialog INFO, the test's cue for the other end to hang up
    info() {
      if (session && session.isEstablished()) session.sendInfo("text/plain", "hang up, please");
    },

    hangup() {
      if (session && !session.isEnded()) session.terminate();
    },

    stop() {
      if (ua) ua.stop();
    },
  };
})();

/* relaydesk web chat widget.
 *
 * Embed with one tag:  <script src="https://support.example.com/web/widget.js" async></script>
 * Optional settings, as data attributes on that tag or in window.relaydeskSettings (read, never written):
 *   user_id / email, name,       a logged-in customer, vouched for by your backend:
 *   issued_at + user_hash        user_hash = hex HMAC-SHA256(identity secret, the claim as sorted compact
 *                                JSON: {"email", "issued_at", "name", "user_id"}, empty fields left out)
 *   transport: "http"            never try WebSocket (long polling only)
 *
 * Everything lives inside this function and a Shadow DOM: no globals, no styles leak either way.
 * Whatever a customer or an agent typed is put on the page as text (textContent), never as HTML.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  if (!script || document.querySelector("[data-relaydesk-widget]")) return;
  var BASE = new URL(script.src, location.href).href.replace(/\/web\/widget\.js(?:[?#].*)?$/, "");
  var WS_BASE = BASE.replace(/^http/, "ws");
  var CSS = "__RELAYDESK_CSS__";
  var TOKEN_KEY = "relaydesk:token:" + BASE;
  // pending: relaydesk has it, but the agents' room has not shown it for minutes (it keeps trying);
  // undelivered: relaydesk gave up passing it on (shown like failed, and final)
  var STATES = { failed: -1, undelivered: -1, sending: 0, sent: 1, pending: 1.5, delivered: 2, read: 3 };
  var STATE_WORDS = {
    failed: "Not sent", undelivered: "Not delivered", sending: "Sending…", sent: "Sent",
    pending: "Not delivered yet, retrying…", delivered: "Delivered", read: "Read"
  };
  var STATE_MARKS = { failed: "!", undelivered: "!", sending: "…", sent: "✓", pending: "⏳", delivered: "✓✓", read: "✓✓" };

  function readSettings(tag) {
    var out = {};
    var global = window.relaydeskSettings;
    if (global && typeof global === "object") {
      ["user_id", "email", "name", "user_hash", "transport"].forEach(function (k) {
        if (typeof global[k] === "string") out[k] = global[k];
      });
      if (typeof global.issued_at === "number" || typeof global.issued_at === "string") out.issued_at = global.issued_at;
    }
    var data = tag.dataset || {};
    if (data.userId) out.user_id = data.userId;
    if (data.email) out.email = data.email;
    if (data.name) out.name = data.name;
    if (data.userHash) out.user_hash = data.userHash;
    if (data.issuedAt) out.issued_at = data.issuedAt;
    if (out.issued_at !== undefined) out.issued_at = Number(out.issued_at);
    if (data.transport) out.transport = data.transport;
    return out;
  }

  var settings = readSettings(script);
  var claimsIdentity = !!(settings.user_hash && (settings.user_id || settings.email));

  var storage = {
    get: function (k) { try { return window.localStorage.getItem(k); } catch (e) { return null; } },
    set: function (k, v) { try { window.localStorage.setItem(k, v); } catch (e) { /* private mode */ } },
    del: function (k) { try { window.localStorage.removeItem(k); } catch (e) { /* private mode */ } },
  };

  var state = {
    token: null,
    verified: false,
    config: {
      title: "Chat with us", welcome: "", bot_name: "Assistant", max_text_length: 4000,
      max_upload_bytes: 10485760, upload_types: [], upload_types_text: "",
      websocket_retry_seconds: 30,
    },
    items: {},          // key -> message (customer: "c:<client id>", answers: "m:<message id>")
    seq: 0,             // creation order of messages without an id yet
    newest: 0,          // highest message id seen
    readUpto: 0,
    deliveredUpto: 0,
    sentReceipt: { delivered: 0, read: 0 },
    unacked: {},        // client id -> frame, sent over the socket but not yet acknowledged
    open: false,
    started: false,
    ws: null,
    wsFailures: 0,
    polling: settings.transport === "http",
    httpOnly: settings.transport === "http",  // the site asked for long polling: never try WebSocket
    probing: false,     // a WebSocket is being tried while on long polling
    pollFailed: false,  // the last long poll failed (relaydesk was unreachable)
    probeTimer: null,
    backoff: 1000,
    typingTimer: null,
    agentName: "",
  };

  // -- DOM -----------------------------------------------------------------------------------------

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "class") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }

  function icon(path, stroked) {
    // icons are inline SVG (no icon font, no emoji font needed), hidden from screen readers
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    svg.setAttribute("class", "icon");
    var shape = document.createElementNS(ns, "path");
    shape.setAttribute("d", path);
    shape.setAttribute("fill", stroked ? "none" : "currentColor");
    if (stroked) { shape.setAttribute("stroke", "currentColor"); shape.setAttribute("stroke-width", "2"); shape.setAttribute("stroke-linecap", "round"); }
    svg.appendChild(shape);
    return svg;
  }

  var host = el("div", { "data-relaydesk-widget": "" });
  host.setAttribute("style", "position:fixed;right:0;bottom:0;z-index:2147483000;width:0;height:0;");
  var root = host.attachShadow({ mode: "open" });
  var style = el("style");
  style.textContent = CSS;

  var badge = el("span", { class: "badge", hidden: "" });
  var launcher = el("button", {
    type: "button", class: "launcher", "aria-label": "Open chat", "aria-expanded": "false",
    "aria-controls": "rd-panel",
  }, [icon("M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z"), badge]);

  var title = el("h2", { class: "title", id: "rd-title", text: state.config.title });
  var subtitle = el("p", { class: "subtitle", id: "rd-subtitle" });
  var closeBtn = el("button", { type: "button", class: "close", "aria-label": "Close chat", text: "×" });
  var header = el("header", { class: "header" }, [el("div", { class: "heading" }, [title, subtitle]), closeBtn]);

  var welcome = el("p", { class: "welcome" });
  var list = el("ol", { class: "messages", role: "log", "aria-live": "polite", "aria-label": "Messages" });
  var typing = el("p", { class: "typing", "aria-live": "polite", hidden: "" });
  var scroller = el("div", { class: "scroller", tabindex: "0", "aria-label": "Conversation" }, [welcome, list, typing]);

  var status = el("p", { class: "status", role: "status" });
  var error = el("p", { class: "error", role: "alert" });
  var input = el("textarea", {
    id: "rd-input", class: "input", rows: "1", placeholder: "Write a message…", "aria-label": "Message",
  });
  var fileInput = el("input", { type: "file", class: "file-input", tabindex: "-1", "aria-hidden": "true" });
  var attachBtn = el("button", { type: "button", class: "attach", "aria-label": "Attach an image or a file" },
    [icon("M16.5 6.5l-8 8a2.5 2.5 0 0 0 3.5 3.5l8.5-8.5a4.5 4.5 0 0 0-6.4-6.4L5.6 11.6a6.5 6.5 0 0 0 9.2 9.2L21 14.6", true)]);
  var sendBtn = el("button", { type: "submit", class: "send", "aria-label": "Send" }, [icon("M3 20l18-8L3 4v6l12 2-12 2z")]);
  var form = el("form", { class: "composer" }, [attachBtn, fileInput, input, sendBtn]);

  var panel = el("section", {
    id: "rd-panel", class: "panel", role: "dialog", "aria-labelledby": "rd-title", "aria-describedby": "rd-subtitle",
    hidden: "",
  }, [header, scroller, status, error, form]);

  root.appendChild(style);
  root.appendChild(panel);
  root.appendChild(launcher);

  function mount() { document.body.appendChild(host); }
  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);

  // -- opening and closing -------------------------------------------------------------------------

  function setOpen(open) {
    state.open = open;
    panel.hidden = !open;
    launcher.setAttribute("aria-expanded", String(open));
    launcher.setAttribute("aria-label", open ? "Hide chat" : "Open chat");
    host.setAttribute("data-open", open ? "true" : "false");
    if (open) {
      start();
      input.focus();
      scrollDown();
      sendReceipts();
    } else {
      launcher.focus();
    }
    updateBadge();
  }

  launcher.addEventListener("click", function () { setOpen(!state.open); });
  closeBtn.addEventListener("click", function () { setOpen(false); });
  panel.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape") { ev.preventDefault(); setOpen(false); }
  });
  document.addEventListener("visibilitychange", sendReceipts);

  // -- formatting ----------------------------------------------------------------------------------

  function humanSize(size) {
    if (size >= 1048576) return (size / 1048576).toFixed(1).replace(/\.0$/, "") + " MB";
    if (size >= 1024) return Math.floor(size / 1024) + " KB";
    return size + " bytes";
  }

  function safeUrl(url) {
    if (!url) return "";
    if (url.charAt(0) === "/") return BASE + url;
    return /^https?:\/\//i.test(url) ? url : "";
  }

  function timeOf(iso) {
    var d = iso ? new Date(iso) : new Date();
    return isNaN(d) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function newId() {
    var bytes = new Uint8Array(12);
    (window.crypto || window.msCrypto).getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  // -- messages ------------------------------------------------------------------------------------

  function renderAttachment(a) {
    var url = safeUrl(a.url);
    var label = a.name || "file";
    if (a.kind === "image" && url) {
      var img = el("img", { src: url, alt: label, loading: "lazy" });
      return el("a", { class: "attachment image", href: url, target: "_blank", rel: "noopener noreferrer" }, [img]);
    }
    var text = label + (a.size ? " (" + humanSize(a.size) + ")" : "");
    if (!url) return el("span", { class: "attachment file", text: (a.uploading ? "Uploading " : "") + text });
    return el("a", { class: "attachment file", href: url, target: "_blank", rel: "noopener noreferrer", download: label, text: text });
  }

  function render(item) {
    var node = item.node;
    if (!node) {
      node = item.node = el("li");
      node.appendChild(el("span", { class: "sr-only who" }));
      node.appendChild(el("span", { class: "author", "aria-hidden": "true" }));
      node.appendChild(el("div", { class: "bubble" }));
      node.appendChild(el("span", { class: "meta" }));
    }
    var side = item.side;
    node.className = "message " + side + (item.deleted ? " deleted" : "");
    node.setAttribute("data-key", item.key);
    var who = side === "customer" ? "You" : item.author || (side === "bot" ? state.config.bot_name : "Agent");
    node.children[0].textContent = who + " wrote: ";
    node.children[1].textContent = side === "customer" ? "" : who;
    var bubble = node.children[2];
    bubble.textContent = "";
    if (item.deleted) {
      bubble.appendChild(el("span", { class: "text", text: "This message was deleted." }));
    } else {
      if (item.text) bubble.appendChild(el("span", { class: "text", text: item.text }));
      (item.attachments || []).forEach(function (a) { bubble.appendChild(renderAttachment(a)); });
    }
    var meta = timeOf(item.at) + (item.edited && !item.deleted ? " · edited" : "");
    if (side === "customer") {
      var st = item.state || "sending";
      meta += " · " + STATE_MARKS[st] + " " + STATE_WORDS[st];
      node.setAttribute("data-state", st);
    }
    node.children[3].textContent = meta;
  }

  function order(a, b) {
    // a message written here has no id until the history returns it: it goes after every message
    // known when it was written (``after``) and before any that arrived later
    var ia = a.id || a.after + 0.5, ib = b.id || b.after + 0.5;
    if (ia !== ib) return ia - ib;
    return (a.seq || 0) - (b.seq || 0);
  }

  function arrange() {
    var sorted = Object.keys(state.items).map(function (k) { return state.items[k]; }).sort(order);
    var stick = nearBottom();
    sorted.forEach(function (item, i) {
      if (list.children[i] !== item.node) list.insertBefore(item.node, list.children[i] || null);
    });
    if (stick) scrollDown();
  }

  function upsert(msg) {
    var item = state.items[msg.key];
    if (!item) item = state.items[msg.key] = { key: msg.key, seq: ++state.seq, after: state.newest };
    ["id", "side", "author", "text", "attachments", "at", "edited", "deleted", "client_id"].forEach(function (k) {
      if (msg[k] !== undefined && msg[k] !== null) item[k] = msg[k];
    });
    if (msg.state) setItemState(item, msg.state, true);
    if (item.id && item.id > state.newest) state.newest = item.id;
    if (item.side === "agent") {
      if (item.author) state.agentName = item.author;
      markRead(item);
    }
    render(item);
    return item;
  }

  function setItemState(item, st, quiet) {
    var current = item.state in STATES ? STATES[item.state] : -2;
    if (item.state === "undelivered") return;  // final: relaydesk gave up on it
    if (st === "failed" || st === "undelivered" || STATES[st] > current) item.state = st;
    if (!quiet && item.node) render(item);
  }

  function markRead(agent) {
    // an agent answered: what the customer wrote before that counts as read
    Object.keys(state.items).forEach(function (k) {
      var it = state.items[k];
      var before = it.id && agent.id ? it.id < agent.id : it.seq < agent.seq;
      var seen = STATES[it.state] >= STATES.sent && it.state !== "pending";  // pending: not in the room yet
      if (it.side === "customer" && before && seen) setItemState(it, "read");
    });
  }

  function showWelcome() {
    welcome.textContent = state.config.welcome || "";
    welcome.hidden = !state.config.welcome;
  }

  function showAgent() {
    subtitle.textContent = state.agentName ? "You are chatting with " + state.agentName : "We usually answer within minutes";
  }

  function setTyping(name, active) {
    clearTimeout(state.typingTimer);
    typing.hidden = !active;
    typing.textContent = active ? (name || "An agent") + " is typing…" : "";
    if (active) state.typingTimer = setTimeout(function () { setTyping("", false); }, 30000);
  }

  function setError(text) {
    error.textContent = text || "";
  }

  function setStatus(text) {
    status.textContent = text || "";
  }

  function nearBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 60;
  }

  function scrollDown() {
    scroller.scrollTop = scroller.scrollHeight;
  }

  function answers() {
    return Object.keys(state.items).map(function (k) { return state.items[k]; })
      .filter(function (it) { return it.side !== "customer" && it.id; });
  }

  function updateBadge() {
    var unread = state.open ? 0 : answers().filter(function (it) { return it.id > state.readUpto; }).length;
    badge.hidden = unread === 0;
    badge.textContent = unread ? String(unread) : "";
    launcher.setAttribute("aria-label", (state.open ? "Hide chat" : "Open chat") + (unread ? " (" + unread + " unread)" : ""));
  }

  function applyHistory(data) {
    (data.messages || []).forEach(upsert);
    if (typeof data.read_upto === "number") state.readUpto = Math.max(state.readUpto, data.read_upto);
    if (typeof data.delivered_upto === "number") state.deliveredUpto = Math.max(state.deliveredUpto, data.delivered_upto);
    if (data.typing) setTyping(data.typing, true);
    else if (data.typing === null) setTyping("", false);
    arrange();
    showAgent();
    afterNews();
  }

  function afterNews() {
    updateBadge();
    sendReceipts();
  }

  // -- receipts ------------------------------------------------------------------------------------

  function sendReceipts() {
    if (!state.token) return;
    var newest = answers().reduce(function (m, it) { return Math.max(m, it.id); }, 0);
    if (!newest) return;
    var frame = { type: "receipt" };
    if (newest > state.sentReceipt.delivered) frame.delivered = newest;
    if (state.open && document.visibilityState === "visible" && newest > state.sentReceipt.read) {
      frame.read = newest;
      state.readUpto = Math.max(state.readUpto, newest);
    }
    if (!frame.delivered && !frame.read) return;
    if (frame.delivered) state.sentReceipt.delivered = frame.delivered;
    if (frame.read) state.sentReceipt.read = frame.read;
    if (state.ws && state.ws.readyState === 1) state.ws.send(JSON.stringify(frame));
    else api("POST", "/web/api/receipts", { delivered: frame.delivered, read: frame.read }).catch(function () {});
    updateBadge();
  }

  // -- the session ---------------------------------------------------------------------------------

  function api(method, path, body) {
    var headers = {};
    if (state.token) headers.Authorization = "Bearer " + state.token;
    var init = { method: method, headers: headers, mode: "cors" };
    if (body instanceof FormData) init.body = body;
    else if (body) { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    return fetch(BASE + path, init).then(function (resp) {
      return resp.json().catch(function () { return {}; }).then(function (data) {
        return { ok: resp.ok, status: resp.status, data: data };
      });
    });
  }

  function openSession(useClaims) {
    var body = {};
    var renewing = useClaims && state.verified && state.token;
    if (renewing) {
      body.token = state.token;  // the verified session is renewed: the page's claim may be old by now
    } else if (useClaims) {
      ["user_id", "email", "name", "user_hash", "issued_at"].forEach(function (k) { if (settings[k]) body[k] = settings[k]; });
    } else {
      var stored = storage.get(TOKEN_KEY);
      if (stored) body.token = stored;
    }
    var saved = state.token;
    state.token = null;
    return api("POST", "/web/api/session", body).then(function (res) {
      if (res.status === 401) {
        if (renewing) { state.verified = false; return openSession(true); }
        if (useClaims) {
          if (window.console) console.warn("relaydesk: " + (res.data.error || "identity not verified") + " Chatting anonymously.");
          claimsIdentity = false;
          return openSession(false);
        }
        storage.del(TOKEN_KEY);  // expired or not ours: start as a new visitor
        if (body.token) return openSession(false);
      }
      if (!res.ok) { state.token = saved; throw new Error(res.data.error || "HTTP " + res.status); }
      state.token = res.data.token;
      state.verified = !!res.data.verified;
      if (!state.verified) storage.set(TOKEN_KEY, state.token);
      state.config = Object.assign(state.config, res.data.config || {});
      state.readUpto = Math.max(state.readUpto, res.data.read_upto || 0);
      state.sentReceipt.read = Math.max(state.sentReceipt.read, res.data.read_upto || 0);
      state.sentReceipt.delivered = Math.max(state.sentReceipt.delivered, res.data.delivered_upto || 0);
      title.textContent = state.config.title;
      input.setAttribute("maxlength", String(state.config.max_text_length));
      if (state.config.upload_types.length) fileInput.setAttribute("accept", state.config.upload_types.join(","));
      showWelcome();
      showAgent();
    });
  }

  function start() {
    if (state.started) return;
    state.started = true;
    setStatus("Connecting…");
    openSession(claimsIdentity).then(connect, function () {
      state.started = false;
      setStatus("Cannot reach the chat right now. Retrying…");
      setTimeout(start, nextBackoff());
    });
  }

  function nextBackoff() {
    var wait = state.backoff;
    state.backoff = Math.min(state.backoff * 2, 30000);
    return wait;
  }

  function connect() {
    if (state.polling || !("WebSocket" in window)) { state.polling = true; poll(); return; }
    var opened = false;
    var ws;
    try { ws = new WebSocket(WS_BASE + "/web/ws?token=" + encodeURIComponent(state.token)); }
    catch (e) { state.polling = true; poll(); return; }
    state.ws = ws;
    ws.onopen = function () {
      opened = true;
      state.wsFailures = 0;
      state.backoff = 1000;
      setStatus("");
      ws.send(JSON.stringify({ type: "sync", after: 0 }));
      Object.keys(state.unacked).forEach(function (cid) { ws.send(JSON.stringify(state.unacked[cid])); });
    };
    ws.onmessage = function (ev) {
      var frame;
      try { frame = JSON.parse(ev.data); } catch (e) { return; }
      onFrame(frame);
    };
    ws.onclose = function () {
      if (state.ws === ws) state.ws = null;
      if (!opened) state.wsFailures += 1;
      setStatus("Reconnecting…");
      setTimeout(function () {
        // the token may have expired, or WebSocket may be blocked on this network: check the session,
        // then try again, or fall back to plain HTTP after two failed attempts
        openSession(claimsIdentity).then(function () {
          if (state.wsFailures >= 2) { state.polling = true; resendOverHttp(); scheduleProbe(); }
          connect();
        }, function () { setTimeout(connect, nextBackoff()); });
      }, opened ? 500 : nextBackoff());
    };
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "history":
        applyHistory(frame);
        break;
      case "message":
        upsert(frame.message);
        if (frame.message.side === "agent") setTyping("", false);
        arrange();
        showAgent();
        afterNews();
        break;
      case "update": {
        var item = state.items[frame.key];
        if (item) {
          item.text = frame.text; item.edited = frame.edited; item.deleted = frame.deleted;
          render(item);
        }
        break;
      }
      case "state": {
        var own = state.items["c:" + frame.client_id];
        if (own) setItemState(own, frame.state);
        break;
      }
      case "ack": {
        delete state.unacked[frame.client_id];
        var mine = state.items["c:" + frame.client_id];
        if (mine) setItemState(mine, frame.state || "sent");
        break;
      }
      case "retry":
        break;  // relaydesk is restarting: the frame stays unacknowledged and is sent again on reconnect
      case "error": {
        if (frame.client_id) {
          delete state.unacked[frame.client_id];
          var failed = state.items["c:" + frame.client_id];
          if (failed) setItemState(failed, "failed");
        }
        setError(frame.message || "Something went wrong.");
        break;
      }
      case "typing":
        setTyping(frame.agent, frame.active);
        break;
      case "resync":
        if (state.ws) state.ws.send(JSON.stringify({ type: "sync", after: 0 }));
        break;
    }
  }

  // -- the plain HTTP fallback (long polling) -----------------------------------------------------

  function pollFrom() {
    // re-read own messages whose state can still change, and everything newer than what we have
    var from = state.newest;
    Object.keys(state.items).forEach(function (k) {
      var it = state.items[k];
      if (it.side === "customer" && it.id && it.state !== "read") from = Math.min(from, it.id - 1);
    });
    return Math.max(0, from);
  }

  function poll() {
    if (!state.polling) return;
    var first = !state.polledOnce;
    var query = first ? "after=0" : "after=" + pollFrom() + "&newest=" + state.newest + "&wait=25";
    api("GET", "/web/api/messages?" + query).then(function (res) {
      if (res.status === 401) return openSession(claimsIdentity).then(poll);
      if (!res.ok) throw new Error("HTTP " + res.status);
      var recovered = state.pollFailed;
      state.polledOnce = true;
      state.pollFailed = false;
      state.backoff = 1000;
      setStatus("");
      applyHistory(res.data);
      if (recovered) probeWebSocket();  // relaydesk is back after an outage: its WebSocket may work too
      poll();
    }).catch(function () {
      state.pollFailed = true;
      setStatus("Reconnecting…");
      setTimeout(poll, nextBackoff());
    });
  }

  function scheduleProbe() {
    // while on long polling after the WebSocket failed, try it again every websocket_retry_seconds
    if (state.httpOnly || state.probeTimer) return;
    state.probeTimer = setTimeout(function () {
      state.probeTimer = null;
      if (!state.polling) return;
      probeWebSocket();
      scheduleProbe();
    }, (state.config.websocket_retry_seconds || 30) * 1000);
  }

  function probeWebSocket() {
    // On long polling after the WebSocket failed: try one; if it opens, go back to it (the poll loop
    // ends by itself once state.polling is false). A failed try changes nothing.
    if (state.httpOnly || state.probing || !("WebSocket" in window)) return;
    var probe;
    try { probe = new WebSocket(WS_BASE + "/web/ws?token=" + encodeURIComponent(state.token)); }
    catch (e) { return; }
    state.probing = true;
    probe.onopen = function () {
      state.probing = false;
      probe.onclose = null;
      probe.close();
      if (!state.polling) return;
      state.polling = false;
      state.wsFailures = 0;
      connect();
    };
    probe.onclose = function () { state.probing = false; };
  }

  function resendOverHttp() {
    // frames written while the WebSocket was failing go out over plain HTTP (the client id keeps one copy)
    Object.keys(state.unacked).forEach(function (cid) {
      var frame = state.unacked[cid];
      delete state.unacked[cid];
      var item = state.items["c:" + cid];
      if (item && frame.type === "send") postText(item, frame, 0);
    });
  }

  // -- sending -------------------------------------------------------------------------------------

  function sendText(text) {
    var cid = newId();
    var item = upsert({ key: "c:" + cid, client_id: cid, side: "customer", text: text, at: new Date().toISOString(), state: "sending" });
    arrange();
    scrollDown();
    var frame = { type: "send", client_id: cid, text: text };
    if (state.ws && state.ws.readyState === 1) {
      state.unacked[cid] = frame;
      state.ws.send(JSON.stringify(frame));
      return;
    }
    if (!state.polling) { state.unacked[cid] = frame; return; }  // sent once the socket is (re)open
    postText(item, frame, 0);
  }

  function postText(item, frame, tries) {
    api("POST", "/web/api/messages", { client_id: frame.client_id, text: frame.text }).then(function (res) {
      if (res.ok) { setItemState(item, "sent"); return; }
      if (res.status >= 500 || res.status === 401) throw new Error("retry");
      setItemState(item, "failed");
      setError(res.data.error || "The message was not sent.");
    }).catch(function () {
      // the same client id is sent again: relaydesk keeps one copy however often it arrives
      if (tries < 8) setTimeout(function () { postText(item, frame, tries + 1); }, nextBackoff());
      else { setItemState(item, "failed"); setError("The message was not sent: the chat cannot be reached."); }
    });
  }

  function sendFile(file) {
    var cfg = state.config;
    if (file.size > cfg.max_upload_bytes) {
      setError("“" + file.name + "” is " + humanSize(file.size) + "; files can be at most " + humanSize(cfg.max_upload_bytes) + ".");
      return;
    }
    var type = (file.type || "application/octet-stream").toLowerCase();
    if (cfg.upload_types.length && cfg.upload_types.indexOf(type) < 0) {
      setError("“" + file.name + "” is a type of file we cannot accept. You can send: " + (cfg.upload_types_text || cfg.upload_types.join(", ")) + ".");
      return;
    }
    var cid = newId();
    var item = upsert({
      key: "c:" + cid, client_id: cid, side: "customer", text: "", at: new Date().toISOString(), state: "sending",
      attachments: [{ kind: type.indexOf("image/") === 0 ? "image" : "file", name: file.name, size: file.size, url: "", uploading: true }],
    });
    arrange();
    scrollDown();
    var body = new FormData();
    body.append("client_id", cid);
    body.append("file", file, file.name);
    api("POST", "/web/api/upload", body).then(function (res) {
      if (!res.ok) {
        setItemState(item, "failed");
        setError(res.data.error || "The file was not sent (HTTP " + res.status + ").");
        return;
      }
      item.attachments = [res.data.attachment];
      setItemState(item, "sent", true);
      render(item);
    }, function () {
      setItemState(item, "failed");
      setError("The file was not sent: the chat cannot be reached. Try again.");
    });
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var text = input.value.trim();
    if (!text) return;
    if (text.length > state.config.max_text_length) {
      setError("The message is too long (at most " + state.config.max_text_length + " characters).");
      return;
    }
    setError("");
    input.value = "";
    stopTyping();
    sendText(text);
  });

  // -- the customer's typing, shown to the agents (over the WebSocket only; best effort) -------------

  var TYPING_REPEAT_MS = 3000, TYPING_IDLE_MS = 5000;
  var ownTyping = { active: false, sentAt: 0, idle: null };

  function typingFrame(active) {
    if (state.ws && state.ws.readyState === 1) state.ws.send(JSON.stringify({ type: "typing", active: active }));
  }

  function stopTyping() {
    if (ownTyping.idle) { clearTimeout(ownTyping.idle); ownTyping.idle = null; }
    if (ownTyping.active) { ownTyping.active = false; typingFrame(false); }
  }

  input.addEventListener("input", function () {
    if (!input.value.trim()) { stopTyping(); return; }
    var now = Date.now();
    if (!ownTyping.active || now - ownTyping.sentAt > TYPING_REPEAT_MS) {
      ownTyping.active = true;
      ownTyping.sentAt = now;
      typingFrame(true);
    }
    if (ownTyping.idle) clearTimeout(ownTyping.idle);
    ownTyping.idle = setTimeout(stopTyping, TYPING_IDLE_MS);
  });

  input.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      if (form.requestSubmit) form.requestSubmit(); else sendBtn.click();
    }
  });

  attachBtn.addEventListener("click", function () { fileInput.click(); });
  fileInput.addEventListener("change", function () {
    var file = fileInput.files && fileInput.files[0];
    fileInput.value = "";
    setError("");
    if (file) sendFile(file);
  });

  showWelcome();
  showAgent();
  // a returning visitor (or a logged-in customer) connects at once: answers that came while they
  // were away show as unread on the launcher; a new visitor connects when they first open the chat
  if (storage.get(TOKEN_KEY) || claimsIdentity) start();
})();

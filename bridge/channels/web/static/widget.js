/* relaydesk web chat widget.
 *
 * Embed with one tag:  <script src="https://support.example.com/web/widget.js" async></script>
 * Optional settings, as data attributes on that tag or in window.relaydeskSettings (read, never written):
 *   user_id / email, name,       a logged-in customer, vouched for by your backend:
 *   issued_at + user_hash        user_hash = hex HMAC-SHA256(identity secret, the claim as sorted compact
 *                                JSON: {"email", "issued_at", "name", "user_id"}, empty fields left out)
 *   transport: "http"            never try WebSocket (long polling only)
 *   locale: "zh"                 the widget's language (default: the browser's; English and Chinese ship)
 *
 * Everything lives inside this function and a Shadow DOM: no globals, no styles leak either way. The
 * styles are a constructed stylesheet (no <style>, no style attribute), so a strict Content-Security-Policy
 * needs nothing for them. Whatever a customer or an agent typed is put on the page as text nodes (links
 * in answers as <a> built with DOM calls), never as HTML.
 *
 * Nothing the visitor writes is lost: each message waits in an outbox in localStorage (it survives a
 * reload) until relaydesk acknowledges it, and is sent again, with its client id, on every reconnection
 * by either transport; relaydesk keeps one copy per client id.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  if (!script || document.querySelector("[data-relaydesk-widget]")) return;
  var BASE = new URL(script.src, location.href).href.replace(/\/web\/widget\.js(?:[?#].*)?$/, "");
  var WS_BASE = BASE.replace(/^http/, "ws");
  var CSS = "__RELAYDESK_CSS__";
  var LOCALES = "__RELAYDESK_LOCALES__";
  var TOKEN_KEY = "relaydesk:token:" + BASE;
  var OUTBOX_KEY = "relaydesk:outbox:" + BASE;
  var ACK_TIMEOUT_MS = 5000;    // a frame not acknowledged by then: the connection is treated as broken
  var MAX_BACKOFF_MS = 5000;    // reconnect at least this often while online (the visitor waits on it)
  // pending: relaydesk has it, but the agents' room has not shown it for minutes (it keeps trying);
  // undelivered: relaydesk gave up passing it on (shown like failed, and final);
  // queued: written here, not acknowledged yet, and the connection is down (it goes when it is back)
  var STATES = { failed: -1, undelivered: -1, queued: 0, sending: 0, sent: 1, pending: 1.5, delivered: 2, read: 3 };
  var STATE_MARKS = { failed: "!", undelivered: "!", queued: "…", sending: "…", sent: "✓", pending: "⏳", delivered: "✓✓", read: "✓✓" };

  function readSettings(tag) {
    var out = {};
    var global = window.relaydeskSettings;
    if (global && typeof global === "object") {
      ["user_id", "email", "name", "user_hash", "transport", "locale"].forEach(function (k) {
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
    if (data.locale) out.locale = data.locale;
    return out;
  }

  var settings = readSettings(script);
  var claimsIdentity = !!(settings.user_hash && (settings.user_id || settings.email));

  // -- language ------------------------------------------------------------------------------------

  function pickLocale() {
    var wanted = [settings.locale].concat(navigator.languages || [navigator.language]);
    for (var i = 0; i < wanted.length; i++) {
      var tag = String(wanted[i] || "").toLowerCase();
      if (LOCALES[tag]) return tag;
      var primary = tag.split(/[-_]/)[0];
      if (primary && LOCALES[primary]) return primary;
    }
    return "en";
  }

  var LOCALE = pickLocale();
  var TEXTS = LOCALES[LOCALE];
  var EN = LOCALES.en;

  function t(key, values) {
    var text = TEXTS[key] !== undefined ? TEXTS[key] : EN[key];
    return String(text).replace(/\{(\w+)\}/g, function (m, name) {
      return values && values[name] !== undefined ? String(values[name]) : m;
    });
  }

  function number(n) {
    try { return n.toLocaleString(LOCALE); } catch (e) { return String(n); }
  }

  // the language of a text by its script (agents and visitors write in any language): screen readers
  // then read it with the right voice; a text in Latin letters counts as the widget's language
  function langOf(text) {
    if (/[\u3040-\u30ff]/.test(text)) return "ja";
    if (/[\uac00-\ud7af]/.test(text)) return "ko";
    if (/[\u4e00-\u9fff\u3400-\u4dbf]/.test(text)) return "zh";
    if (/[\u0600-\u06ff]/.test(text)) return "ar";
    if (/[\u0590-\u05ff]/.test(text)) return "he";
    if (/[\u0400-\u04ff]/.test(text)) return "ru";
    if (/[\u0e00-\u0e7f]/.test(text)) return "th";
    if (/[\u0370-\u03ff]/.test(text)) return "el";
    if (/[A-Za-z]/.test(text) && !/[A-Za-z]/.test(t("send"))) return "en";
    return LOCALE;
  }

  function chars(text) {
    // characters as people count them (code points), as relaydesk counts them: not UTF-16 units
    return Array.from(text).length;
  }

  var storage = {
    get: function (k) { try { return window.localStorage.getItem(k); } catch (e) { return null; } },
    set: function (k, v) { try { window.localStorage.setItem(k, v); } catch (e) { /* private mode */ } },
    del: function (k) { try { window.localStorage.removeItem(k); } catch (e) { /* private mode */ } },
  };

  var state = {
    token: null,
    verified: false,
    config: {
      title: EN.title, welcome: "", bot_name: EN.bot_name, max_text_length: 4000,
      max_upload_bytes: 10485760, upload_types: [], upload_types_text: "",
      websocket_retry_seconds: 30,
    },
    items: {},          // key -> message (customer: "c:<client id>", answers: "m:<message id>")
    seq: 0,             // creation order of messages without an id yet
    newest: 0,          // highest message id seen
    readUpto: 0,
    deliveredUpto: 0,
    sentReceipt: { delivered: 0, read: 0 },
    inflight: {},       // client id -> the socket it went over, or "http": sent, not acknowledged yet
    sentAt: {},         // client id -> when it went over the socket
    ackTimer: null,
    historyLoaded: false,
    open: false,
    started: false,
    connected: false,   // a transport works right now (an open WebSocket, or a long poll that answered)
    ws: null,
    wsFailures: 0,
    polling: settings.transport === "http",
    httpOnly: settings.transport === "http",  // the site asked for long polling: never try WebSocket
    probing: false,     // a WebSocket is being tried while on long polling
    pollFailed: false,  // the last long poll failed (relaydesk was unreachable)
    probeTimer: null,
    reconnectTimer: null,
    backoff: 500,
    typingTimer: null,
    agentName: "",
    tooLong: false,
  };

  // -- the outbox: what the visitor wrote and relaydesk has not acknowledged (survives a reload) --

  // This page's own entries are also kept in memory: without localStorage (blocked, full) they are still
  // sent while the page is open. Other tabs of the site share the stored ones (the client id keeps one copy).
  var outbox = {
    mine: {},
    stored: function () {
      try { return JSON.parse(storage.get(OUTBOX_KEY) || "{}") || {}; } catch (e) { return {}; }
    },
    load: function () {
      var all = outbox.stored();
      Object.keys(outbox.mine).forEach(function (cid) { if (!(cid in all)) all[cid] = outbox.mine[cid]; });
      return all;
    },
    put: function (entry) {
      outbox.mine[entry.client_id] = entry;
      var all = outbox.stored();
      all[entry.client_id] = entry;
      storage.set(OUTBOX_KEY, JSON.stringify(all));
    },
    drop: function (cid) {
      delete outbox.mine[cid];
      var all = outbox.stored();
      if (!(cid in all)) return;
      delete all[cid];
      if (Object.keys(all).length) storage.set(OUTBOX_KEY, JSON.stringify(all));
      else storage.del(OUTBOX_KEY);
    },
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

  // The host is a custom element (a host rule on div, section ... never matches it) attached to <html>,
  // not <body> (a transform or filter on body would anchor the fixed launcher to body's box), and shown
  // in the top layer where browsers have it (see mount).
  var host = document.createElement("relaydesk-widget");
  host.setAttribute("data-relaydesk-widget", "");
  var root = host.attachShadow({ mode: "open" });
  var viewportSheet = null;  // the panel's height on phones, following the visual viewport
  if (root.adoptedStyleSheets !== undefined && typeof CSSStyleSheet === "function" && CSSStyleSheet.prototype.replaceSync) {
    var sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
    viewportSheet = new CSSStyleSheet();
    root.adoptedStyleSheets = [sheet, viewportSheet];
  } else {
    root.appendChild(el("style", { text: CSS }));  // old browsers (blocked by a strict CSP; nothing else is)
  }

  var badge = el("span", { class: "badge", hidden: "", "aria-hidden": "true" });
  var launcher = el("button", {
    type: "button", class: "launcher", "aria-label": t("open_chat"), "aria-expanded": "false",
    "aria-controls": "rd-panel",
  }, [icon("M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z"), badge]);

  var title = el("h2", { class: "title", id: "rd-title", text: t("title") });
  var subtitle = el("p", { class: "subtitle", id: "rd-subtitle" });
  var closeBtn = el("button", { type: "button", class: "close", "aria-label": t("close_chat") },
    [icon("M6 6l12 12M18 6L6 18", true)]);
  var header = el("div", { class: "header" }, [el("div", { class: "heading" }, [title, subtitle]), closeBtn]);

  var welcome = el("p", { class: "welcome", dir: "auto" });
  // a log (announced politely as messages are added) holding a plain list of messages
  var list = el("ol", { class: "messages" });
  var log = el("div", { class: "log", role: "log", "aria-live": "polite", "aria-label": t("messages") }, [list]);
  var typing = el("p", { class: "typing", "aria-live": "polite", hidden: "" });
  var scroller = el("div", { class: "scroller", tabindex: "0", role: "region", "aria-label": t("conversation") }, [welcome, log, typing]);

  var status = el("p", { class: "status", role: "status" });
  var error = el("p", { class: "error", role: "alert" });
  var counter = el("p", { class: "counter", id: "rd-counter", hidden: "" });
  var input = el("textarea", {
    id: "rd-input", class: "input", rows: "1", placeholder: t("placeholder"), "aria-label": t("message"),
    dir: "auto", "aria-describedby": "rd-counter",
  });
  var fileInput = el("input", { type: "file", class: "file-input", tabindex: "-1", "aria-hidden": "true" });
  var attachBtn = el("button", { type: "button", class: "attach", "aria-label": t("attach") },
    [icon("M16.5 6.5l-8 8a2.5 2.5 0 0 0 3.5 3.5l8.5-8.5a4.5 4.5 0 0 0-6.4-6.4L5.6 11.6a6.5 6.5 0 0 0 9.2 9.2L21 14.6", true)]);
  var sendBtn = el("button", { type: "submit", class: "send", "aria-label": t("send") }, [icon("M3 20l18-8L3 4v6l12 2-12 2z")]);
  var form = el("form", { class: "composer" }, [attachBtn, fileInput, input, sendBtn]);

  var panel = el("section", {
    id: "rd-panel", class: "panel", role: "dialog", "aria-labelledby": "rd-title", "aria-describedby": "rd-subtitle",
    hidden: "",
  }, [header, scroller, status, error, counter, form]);
  // news while the panel is closed is announced here (the log inside a hidden panel is silent)
  var announcer = el("div", { class: "sr-only", "aria-live": "polite" });

  var frame = el("div", { class: "frame", dir: TEXTS.dir || "ltr", lang: LOCALE }, [announcer, panel, launcher]);
  root.appendChild(frame);

  function mount() {
    document.documentElement.appendChild(host);
    // In the top layer (a manual popover, never light-dismissed) the widget is placed against the
    // viewport whatever the page does: a transform on <html> or <body> cannot move it off-screen.
    if (typeof host.showPopover === "function") {
      host.setAttribute("popover", "manual");
      try { host.showPopover(); } catch (e) { /* not in the top layer: fixed still holds without transforms */ }
    }
  }
  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);

  // -- opening and closing; a modal dialog on small screens ----------------------------------------

  var SMALL_SCREEN = "(max-width: 520px), (max-height: 520px)";  // as in widget.css
  var small = window.matchMedia ? window.matchMedia(SMALL_SCREEN) : { matches: false };
  var inertBefore = null;  // body's own inert, restored when the modal panel closes

  function setModal(on) {
    var body = document.body;
    if (on) panel.setAttribute("aria-modal", "true"); else panel.removeAttribute("aria-modal");
    if (!body) return;
    if (on && inertBefore === null) { inertBefore = body.inert === true; body.inert = true; }
    else if (!on && inertBefore !== null) { body.inert = inertBefore; inertBefore = null; }
  }

  function updateModal() { setModal(state.open && !!small.matches); }
  if (small.addEventListener) small.addEventListener("change", updateModal);

  function setOpen(open) {
    state.open = open;
    panel.hidden = !open;
    launcher.setAttribute("aria-expanded", String(open));
    host.setAttribute("data-open", open ? "true" : "false");
    updateModal();
    if (open) {
      start();
      fitViewport();
      input.focus();
      scrollDown();
      sendReceipts();
    } else {
      launcher.focus();
    }
    updateBadge();
  }

  function focusables() {
    return Array.prototype.filter.call(panel.querySelectorAll("button, textarea, a[href], [tabindex='0']"), function (n) {
      return !n.disabled && n.getClientRects().length > 0;
    });
  }

  launcher.addEventListener("click", function () { setOpen(!state.open); });
  closeBtn.addEventListener("click", function () { setOpen(false); });
  panel.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape") { ev.preventDefault(); setOpen(false); return; }
    if (ev.key === "Tab" && panel.getAttribute("aria-modal") === "true") {
      // the modal panel keeps the focus: Tab from the last control goes to the first and back
      var all = focusables();
      if (!all.length) return;
      var first = all[0], last = all[all.length - 1], current = root.activeElement;
      if (ev.shiftKey && current === first) { ev.preventDefault(); last.focus(); }
      else if (!ev.shiftKey && current === last) { ev.preventDefault(); first.focus(); }
    }
  });
  document.addEventListener("visibilitychange", function () {
    sendReceipts();
    if (document.visibilityState === "visible" && state.started && !state.connected) reconnectSoon(0);
  });

  // The on-screen keyboard shrinks the visual viewport, not the layout viewport: on phones the panel
  // takes the visible part only (and a compact header when that is short, as in landscape).
  function fitViewport() {
    var vv = window.visualViewport;
    if (!vv || !viewportSheet) return;
    var height = Math.round(vv.height);
    viewportSheet.replaceSync(":host { --rd-vv-height: " + height + "px; --rd-vv-top: " + Math.round(vv.offsetTop) + "px; }");
    frame.toggleAttribute("data-compact", height < 420);
  }
  if (window.visualViewport) {
    window.visualViewport.addEventListener("resize", fitViewport);
    window.visualViewport.addEventListener("scroll", fitViewport);
  }

  // -- formatting ----------------------------------------------------------------------------------

  function humanSize(size) {
    if (size >= 1048576) return t("mb", { n: (size / 1048576).toFixed(1).replace(/\.0$/, "") });
    if (size >= 1024) return t("kb", { n: Math.floor(size / 1024) });
    return t("bytes", { n: size });
  }

  function safeUrl(url) {
    if (!url) return "";
    if (url.charAt(0) === "/") return BASE + url;
    return /^https?:\/\//i.test(url) ? url : "";
  }

  function timeOf(iso) {
    var d = iso ? new Date(iso) : new Date();
    return isNaN(d) ? "" : d.toLocaleTimeString(LOCALE, { hour: "2-digit", minute: "2-digit" });
  }

  function newId() {
    var bytes = new Uint8Array(12);
    (window.crypto || window.msCrypto).getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  var URL_RE = /\bhttps?:\/\/[^\s<>"]+/gi;

  function withLinks(parent, text) {
    // links in answers are clickable: http(s) only, built with DOM calls (the text stays text)
    var at = 0, m;
    URL_RE.lastIndex = 0;
    while ((m = URL_RE.exec(text))) {
      var raw = m[0].replace(/[.,;:!?'")\]}>]+$/, "");
      var href = "";
      try { var u = new URL(raw); if (u.protocol === "http:" || u.protocol === "https:") href = u.href; } catch (e) { href = ""; }
      if (!href) continue;
      if (m.index > at) parent.appendChild(document.createTextNode(text.slice(at, m.index)));
      parent.appendChild(el("a", { href: href, target: "_blank", rel: "noopener noreferrer", text: raw }));
      at = m.index + raw.length;
      URL_RE.lastIndex = at;
    }
    if (at < text.length) parent.appendChild(document.createTextNode(text.slice(at)));
  }

  // -- messages ------------------------------------------------------------------------------------

  function renderAttachment(a) {
    var url = safeUrl(a.url);
    var label = a.name || t("file");
    if (a.kind === "image" && url) {
      var img = el("img", { src: url, alt: label, loading: "lazy" });
      return el("a", { class: "attachment image", href: url, target: "_blank", rel: "noopener noreferrer" }, [img]);
    }
    var text = label + (a.size ? " (" + humanSize(a.size) + ")" : "");
    if (!url) return el("span", { class: "attachment file", text: a.uploading ? t("uploading", { name: text }) : text });
    return el("a", { class: "attachment file", href: url, target: "_blank", rel: "noopener noreferrer", download: label, text: text });
  }

  function stateWords(item) {
    var st = item.state || "sending";
    if (st === "failed" && item.retryable) return t("state_retry");
    return t("state_" + st);
  }

  function setText(node, text) { if (node.textContent !== text) node.textContent = text; }

  function render(item) {
    // updated in place: a screen reader announces what changed (the state), not the whole message again
    var node = item.node;
    if (!node) {
      node = item.node = el("li", { "data-key": item.key });
      item.parts = {
        who: el("span", { class: "sr-only who" }),
        author: el("span", { class: "author", "aria-hidden": "true", dir: "auto" }),
        bubble: el("div", { class: "bubble" }),
        time: el("span", { class: "time" }),
        edited: el("span", { class: "edited" }),
        state: el("span", { class: "state" }),
        retry: el("button", { type: "button", class: "retry", hidden: "", text: t("retry") }),
      };
      var p = item.parts;
      p.retry.addEventListener("click", function () { retry(item); });
      node.appendChild(p.who);
      node.appendChild(p.author);
      node.appendChild(p.bubble);
      node.appendChild(el("span", { class: "meta" }, [p.time, p.edited, p.state, p.retry]));
      item.shown = "";
    }
    var parts = item.parts, side = item.side;
    var cls = "message " + side + (item.deleted ? " deleted" : "");
    if (node.className !== cls) node.className = cls;
    var who = side === "customer" ? t("you") : item.author || (side === "bot" ? state.config.bot_name : t("agent"));
    setText(parts.who, t("wrote", { who: who }));
    setText(parts.author, side === "customer" ? "" : who);
    var shown = JSON.stringify([item.deleted, item.text, item.attachments]);
    if (item.shown !== shown) {
      item.shown = shown;
      var bubble = parts.bubble;
      bubble.textContent = "";
      if (item.deleted) {
        bubble.appendChild(el("span", { class: "text", text: t("deleted") }));
      } else {
        if (item.text) {
          var span = el("span", { class: "text", dir: "auto", lang: langOf(item.text) });
          if (side === "customer") span.textContent = item.text; else withLinks(span, item.text);
          bubble.appendChild(span);
        }
        (item.attachments || []).forEach(function (a) { bubble.appendChild(renderAttachment(a)); });
      }
    }
    setText(parts.time, timeOf(item.at));
    setText(parts.edited, item.edited && !item.deleted ? " · " + t("edited") : "");
    if (side === "customer") {
      var st = item.state || "sending";
      setText(parts.state, " · " + STATE_MARKS[st] + " " + stateWords(item));
      if (node.getAttribute("data-state") !== st) node.setAttribute("data-state", st);
      parts.retry.hidden = !(st === "failed" && item.retryable);
    }
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

  function upsert(msg, live) {
    var item = state.items[msg.key];
    var fresh = !item;
    if (!item) item = state.items[msg.key] = { key: msg.key, seq: ++state.seq, after: state.newest };
    ["id", "side", "author", "text", "attachments", "at", "edited", "deleted", "client_id"].forEach(function (k) {
      if (msg[k] !== undefined && msg[k] !== null) item[k] = msg[k];
    });
    if (msg.state) setItemState(item, msg.state, true);
    // in relaydesk's history (it has an id there), or said to be sent: stored, so out of the outbox
    if (item.side === "customer" && item.client_id && (msg.id || STATES[item.state] >= STATES.sent)) acknowledged(item.client_id);
    if (item.id && item.id > state.newest) state.newest = item.id;
    if (item.side === "agent") {
      if (item.author) state.agentName = item.author;
      markRead(item);
    }
    render(item);
    if (fresh && item.side !== "customer" && (live || state.historyLoaded) && !state.open) announce(item);
    return item;
  }

  function announce(item) {
    var who = item.author || (item.side === "bot" ? state.config.bot_name : t("agent"));
    announcer.textContent = t("new_message", { name: who, text: item.deleted ? t("deleted") : item.text || t("file") });
  }

  function setItemState(item, st, quiet) {
    var current = item.state in STATES ? STATES[item.state] : -2;
    if (item.state === "undelivered") return;  // final: relaydesk gave up on it
    if (st === "failed" || st === "undelivered" || STATES[st] > current ||
        ((item.state === "failed" || item.state === "queued" || item.state === "sending") && (st === "sending" || st === "queued"))) {
      item.state = st;
    }
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

  function configText(key) {
    // relaydesk's default texts are English: a visitor in another language gets the locale's own
    var value = state.config[key];
    return !value || value === EN[key] ? t(key) : value;
  }

  function showWelcome() {
    var text = state.config.welcome ? configText("welcome") : "";
    setText(welcome, text);
    welcome.hidden = !text;
  }

  function showAgent() {
    setText(subtitle, state.agentName ? t("chatting_with", { name: state.agentName }) : t("answer_time"));
  }

  function setTyping(name, active) {
    clearTimeout(state.typingTimer);
    typing.hidden = !active;
    setText(typing, active ? t("typing", { name: name || t("an_agent") }) : "");
    if (active) state.typingTimer = setTimeout(function () { setTyping("", false); }, 30000);
  }

  function setError(text) {
    setText(error, text || "");
  }

  function setStatus(text) {
    setText(status, text || "");
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
    setText(badge, unread ? String(unread) : "");
    var label = t(state.open ? "hide_chat" : "open_chat");
    launcher.setAttribute("aria-label", unread ? t("unread", { label: label, count: unread }) : label);
  }

  function applyHistory(data) {
    (data.messages || []).forEach(function (m) { upsert(m, false); });
    if (typeof data.read_upto === "number") state.readUpto = Math.max(state.readUpto, data.read_upto);
    if (typeof data.delivered_upto === "number") state.deliveredUpto = Math.max(state.deliveredUpto, data.delivered_upto);
    if (data.typing) setTyping(data.typing, true);
    else if (data.typing === null) setTyping("", false);
    state.historyLoaded = true;
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
    var receipt = { type: "receipt" };
    if (newest > state.sentReceipt.delivered) receipt.delivered = newest;
    if (state.open && document.visibilityState === "visible" && newest > state.sentReceipt.read) {
      receipt.read = newest;
      state.readUpto = Math.max(state.readUpto, newest);
    }
    if (!receipt.delivered && !receipt.read) return;
    if (receipt.delivered) state.sentReceipt.delivered = receipt.delivered;
    if (receipt.read) state.sentReceipt.read = receipt.read;
    if (state.ws && state.ws.readyState === 1) state.ws.send(JSON.stringify(receipt));
    else api("POST", "/web/api/receipts", { delivered: receipt.delivered, read: receipt.read }).catch(function () {});
    updateBadge();
  }

  // -- connection state, as the visitor sees it ----------------------------------------------------

  function online() { return navigator.onLine !== false; }

  function showConnection() {
    if (!online()) setStatus(t("offline"));
    else if (state.connected) setStatus("");
    else if (!state.started) setStatus("");
    else setStatus(state.everConnected ? t("reconnecting") : t("connecting"));
    // what waits in the outbox while there is no connection says so, and keeps saying it until
    // relaydesk has acknowledged it (a connection that is back may be no better than the last one)
    if (state.connected && online()) return;
    Object.keys(outbox.load()).forEach(function (cid) {
      var item = state.items["c:" + cid];
      if (item && item.state === "sending") setItemState(item, "queued");
    });
  }

  function setConnected(on) {
    state.connected = on;
    if (on) { state.everConnected = true; state.backoff = 500; }
    showConnection();
  }

  window.addEventListener("offline", function () {
    // the socket may look open for a while yet: nothing goes over it until the network is back
    if (state.ws) { try { state.ws.close(); } catch (e) { /* closed already */ } }
    setConnected(false);
  });
  window.addEventListener("online", function () {
    showConnection();
    if (state.started) reconnectSoon(0);
  });

  function nextBackoff() {
    var wait = state.backoff;
    state.backoff = Math.min(state.backoff * 2, MAX_BACKOFF_MS);
    return wait;
  }

  function reconnectSoon(delay) {
    // one reconnection attempt at a time; the online event, a visible page or a tap brings it forward
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = setTimeout(function () {
      state.reconnectTimer = null;
      if (!online()) return;  // the online event calls again
      if (state.polling) { if (!state.pollRunning) poll(); flush(); return; }
      if (state.ws) return;
      openSession(claimsIdentity).then(connect, function () { reconnectSoon(nextBackoff()); });
    }, delay);
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
    // the token is kept until relaydesk answers with another one (or says it is no good): a network
    // error leaves it as it was
    var body = {};
    var renewing = useClaims && state.verified && state.token;
    if (renewing) {
      body.token = state.token;  // the verified session is renewed: the page's claim may be old by now
    } else if (useClaims) {
      ["user_id", "email", "name", "user_hash", "issued_at"].forEach(function (k) { if (settings[k]) body[k] = settings[k]; });
    } else {
      var stored = storage.get(TOKEN_KEY) || state.token;
      if (stored) body.token = stored;
    }
    return api("POST", "/web/api/session", body).then(function (res) {
      if (res.status === 401) {
        if (renewing) { state.verified = false; return openSession(true); }
        if (useClaims) {
          if (window.console) console.warn("relaydesk: " + (res.data.error || "identity not verified") + " Chatting anonymously.");
          claimsIdentity = false;
          return openSession(false);
        }
        storage.del(TOKEN_KEY);  // expired or not ours: start as a new visitor
        state.token = null;
        if (body.token) return openSession(false);
      }
      if (!res.ok) throw new Error(res.data.error || "HTTP " + res.status);
      state.token = res.data.token;
      state.verified = !!res.data.verified;
      if (!state.verified) storage.set(TOKEN_KEY, state.token);
      state.config = Object.assign(state.config, res.data.config || {});
      state.readUpto = Math.max(state.readUpto, res.data.read_upto || 0);
      state.sentReceipt.read = Math.max(state.sentReceipt.read, res.data.read_upto || 0);
      state.sentReceipt.delivered = Math.max(state.sentReceipt.delivered, res.data.delivered_upto || 0);
      setText(title, configText("title"));
      showCounter();
      if (state.config.upload_types.length) fileInput.setAttribute("accept", state.config.upload_types.join(","));
      showWelcome();
      showAgent();
    });
  }

  function start() {
    if (state.started) return;
    state.started = true;
    showConnection();
    if (!online()) return;  // the online event connects
    openSession(claimsIdentity).then(connect, function () {
      setStatus(online() ? t("unreachable") : t("offline"));
      reconnectSoon(nextBackoff());
    });
  }

  function connect() {
    if (state.polling || !("WebSocket" in window)) { state.polling = true; poll(); flush(); return; }
    if (state.ws) return;
    var opened = false;
    var ws;
    try { ws = new WebSocket(WS_BASE + "/web/ws?token=" + encodeURIComponent(state.token)); }
    catch (e) { state.polling = true; poll(); flush(); return; }
    state.ws = ws;
    ws.onopen = function () {
      opened = true;
      state.wsFailures = 0;
      ws.send(JSON.stringify({ type: "sync", after: 0 }));
      setConnected(true);
      flush();
    };
    ws.onmessage = function (ev) {
      var data;
      try { data = JSON.parse(ev.data); } catch (e) { return; }
      onFrame(data);
    };
    ws.onclose = function () {
      if (state.ws !== ws) return;
      state.ws = null;
      forgetInflight(ws);
      setConnected(false);
      if (!online()) return;  // the online event reconnects
      setTimeout(function () {
        // Why did it close? If relaydesk answers over HTTP but the socket never opened, WebSocket may be
        // blocked on this network: after two such failures, plain HTTP. If relaydesk does not answer at
        // all, it is down or restarting: that is no reason to give up on the WebSocket.
        openSession(claimsIdentity).then(function () {
          if (!opened) state.wsFailures += 1;
          if (state.wsFailures >= 2) { state.polling = true; scheduleProbe(); }
          connect();
        }, function () { reconnectSoon(nextBackoff()); });
      }, opened ? 200 : nextBackoff());
    };
  }

  function onFrame(data) {
    switch (data.type) {
      case "history":
        applyHistory(data);
        break;
      case "message":
        upsert(data.message, true);
        if (data.message.side === "agent") setTyping("", false);
        arrange();
        showAgent();
        afterNews();
        break;
      case "update": {
        var item = state.items[data.key];
        if (item) {
          item.text = data.text; item.edited = data.edited; item.deleted = data.deleted;
          render(item);
        }
        break;
      }
      case "state": {
        var own = state.items["c:" + data.client_id];
        if (own) setItemState(own, data.state);
        break;
      }
      case "ack": {
        acknowledged(data.client_id);
        var mine = state.items["c:" + data.client_id];
        if (mine) setItemState(mine, data.state || "sent");
        break;
      }
      case "retry":
        // relaydesk is restarting: the message stays in the outbox and is sent again on reconnect
        delete state.inflight[data.client_id];
        break;
      case "error": {
        if (data.client_id) refused(data.client_id, data.message, !!data.retry_after);  // too fast: retry later
        else setError(data.message || t("something_wrong"));
        break;
      }
      case "typing":
        setTyping(data.agent, data.active);
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
    if (!state.polling || state.pollRunning) return;
    state.pollRunning = true;
    var first = !state.polledOnce;
    var query = first ? "after=0" : "after=" + pollFrom() + "&newest=" + state.newest + "&wait=25";
    api("GET", "/web/api/messages?" + query).then(function (res) {
      if (res.status === 401) return openSession(claimsIdentity).then(function () { state.pollRunning = false; poll(); });
      if (!res.ok) throw new Error("HTTP " + res.status);
      state.pollRunning = false;
      var recovered = state.pollFailed;
      state.polledOnce = true;
      state.pollFailed = false;
      setConnected(true);
      applyHistory(res.data);
      flush();
      if (recovered) probeWebSocket();  // relaydesk is back after an outage: its WebSocket may work too
      poll();
    }).catch(function () {
      state.pollRunning = false;
      state.pollFailed = true;
      setConnected(false);
      if (!state.polling) return;
      reconnectSoon(nextBackoff());
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

  // -- sending: everything goes through the outbox -------------------------------------------------

  function flush() {
    // send what the outbox holds and is not on its way over the current transport
    var all = outbox.load();
    var viaSocket = state.ws && state.ws.readyState === 1 ? state.ws : null;
    Object.keys(all).forEach(function (cid) {
      var entry = all[cid];
      var item = state.items["c:" + cid];
      if (!item) item = showQueued(entry);
      if (item.state === "failed") return;  // refused: the visitor retries it by hand
      if (state.inflight[cid]) return;
      if (viaSocket) {
        state.inflight[cid] = viaSocket;
        state.sentAt[cid] = Date.now();
        viaSocket.send(JSON.stringify(withBrowser({ type: "send", client_id: cid, text: entry.text })));
        armAckTimer();
      } else if (state.polling && state.connected) {
        state.inflight[cid] = "http";
        postText(item, entry);
      }
    });
    showConnection();
  }

  function armAckTimer(delay) {
    // a socket that takes frames but answers nothing (a dead network path) is closed and reopened
    if (state.ackTimer) return;
    state.ackTimer = setTimeout(function () {
      state.ackTimer = null;
      var ws = state.ws, now = Date.now(), stuck = false, oldest = now;
      Object.keys(state.inflight).forEach(function (cid) {
        if (!ws || state.inflight[cid] !== ws) return;
        var at = state.sentAt[cid] || 0;
        if (now - at >= ACK_TIMEOUT_MS) stuck = true; else oldest = Math.min(oldest, at);
      });
      if (stuck) { try { ws.close(); } catch (e) { /* closed already */ } if (ws.onclose) ws.onclose(); }
      else if (oldest < now) armAckTimer(ACK_TIMEOUT_MS - (now - oldest));
    }, delay || ACK_TIMEOUT_MS);
  }

  function forgetInflight(ws) {
    Object.keys(state.inflight).forEach(function (cid) { if (state.inflight[cid] === ws) delete state.inflight[cid]; });
  }

  function acknowledged(cid) {
    delete state.inflight[cid];
    outbox.drop(cid);
  }

  function refused(cid, message, retryable) {
    // relaydesk refused it (too long, too fast ...): it leaves the outbox; a temporary refusal can be retried
    delete state.inflight[cid];
    var item = state.items["c:" + cid];
    if (retryable) {
      var entry = outbox.load()[cid];
      if (entry) { entry.failed = true; outbox.put(entry); }
    } else {
      outbox.drop(cid);
    }
    if (item) { item.retryable = retryable; setItemState(item, "failed"); }
    setError(message || t("not_sent"));
  }

  function retry(item) {
    var entry = outbox.load()[item.client_id];
    if (!entry) return;
    delete entry.failed;
    outbox.put(entry);
    item.retryable = false;
    item.state = "sending";
    render(item);
    setError("");
    flush();
    if (!state.connected) reconnectSoon(0);
  }

  function showQueued(entry) {
    var known = state.items["c:" + entry.client_id];
    var item = upsert({ key: "c:" + entry.client_id, client_id: entry.client_id, side: "customer", text: entry.text, at: entry.at, state: entry.failed ? "failed" : "queued" });
    if (!known && !item.id) item.after = Number.MAX_SAFE_INTEGER;  // written before the page (re)loaded: last
    if (entry.failed) { item.retryable = true; render(item); }
    arrange();
    return item;
  }

  function sendText(text) {
    var cid = newId();
    var entry = { client_id: cid, text: text, at: new Date().toISOString() };
    outbox.put(entry);
    upsert({ key: "c:" + cid, client_id: cid, side: "customer", text: text, at: entry.at, state: state.connected ? "sending" : "queued" });
    arrange();
    scrollDown();
    flush();
    if (!state.started) start();
  }

  // the visitor's time zone and language go with each message, for the agents' card (the server checks them)
  function withBrowser(body) {
    try { body.timezone = Intl.DateTimeFormat().resolvedOptions().timeZone || undefined; } catch (e) { /* an old browser */ }
    if (navigator.language) body.locale = navigator.language;
    return body;
  }

  function postText(item, entry) {
    api("POST", "/web/api/messages", withBrowser({ client_id: entry.client_id, text: entry.text })).then(function (res) {
      if (res.ok) { acknowledged(entry.client_id); setItemState(item, "sent"); return; }
      if (res.status >= 500 || res.status === 401) throw new Error("retry");
      refused(entry.client_id, res.data.error, res.status === 429);
    }).catch(function () {
      // still in the outbox: the next poll that works sends it again, with the same client id
      delete state.inflight[entry.client_id];
      setConnected(false);
      reconnectSoon(nextBackoff());
    });
  }

  function sendFile(file) {
    var cfg = state.config;
    if (file.size > cfg.max_upload_bytes) {
      setError(t("file_too_big", { name: file.name, size: humanSize(file.size), max: humanSize(cfg.max_upload_bytes) }));
      return;
    }
    var type = (file.type || "application/octet-stream").toLowerCase();
    if (cfg.upload_types.length && cfg.upload_types.indexOf(type) < 0) {
      setError(t("file_type", { name: file.name, types: cfg.upload_types_text || cfg.upload_types.join(", ") }));
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
        setError(res.data.error || t("file_failed", { status: res.status }));
        return;
      }
      item.attachments = [res.data.attachment];
      setItemState(item, "sent", true);
      render(item);
    }, function () {
      setItemState(item, "failed");
      setError(t("file_unreachable"));
    });
  }

  // -- the composer: a counter near the limit, growing to a few lines, no send while composing -----

  var MAX_ROWS = 5;

  function grow() {
    input.rows = 1;
    var line = parseFloat(getComputedStyle(input).lineHeight) || 20;
    var extra = input.scrollHeight - input.clientHeight;
    if (extra > 0) input.rows = Math.min(MAX_ROWS, 1 + Math.ceil(extra / line));
  }

  function showCounter() {
    var max = state.config.max_text_length;
    var count = chars(input.value.trim());
    var over = count > max;
    counter.hidden = count < max * 0.9;
    setText(counter, t("counter", { count: number(count), max: number(max) }));
    counter.classList.toggle("over", over);
    if (over) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
    if (over !== state.tooLong) {
      state.tooLong = over;
      setError(over ? t("too_long", { count: number(count), max: number(max) }) : "");
    }
    return !over;
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var text = input.value.trim();
    if (!text) return;
    if (!showCounter()) { input.focus(); return; }
    setError("");
    input.value = "";
    grow();
    showCounter();
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
    grow();
    showCounter();
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
    // Enter while an input method composes (Chinese, Japanese ...) confirms the composition: never a send.
    // Safari reports it only as keyCode 229.
    if (ev.isComposing || ev.keyCode === 229) return;
    if (ev.key === "Enter" && !ev.shiftKey) {
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
  updateBadge();
  // what was written and not acknowledged before the page was left is shown, and sent once connected
  var pending = outbox.load();
  Object.keys(pending).forEach(function (cid) { showQueued(pending[cid]); });
  // a returning visitor (or a logged-in customer, or one with unsent messages) connects at once: answers
  // that came while they were away show as unread on the launcher; a new visitor connects on first opening
  if (storage.get(TOKEN_KEY) || claimsIdentity || Object.keys(pending).length) start();
})();

// Shared by the portal and the dashboard: JSON calls with the session cookie and CSRF token,
// the live feed socket (resumes from the last id it saw), and the celebration.
"use strict";
const Rally = (() => {
  let csrf = "", who = null;  // the session's CSRF token, and whom it signs in
  const same = (a, b) => a && b && a.scope === b.scope && a.network === b.network && (a.user_id || a.key) === (b.user_id || b.key);
  const $ = (sel) => document.querySelector(sel);
  const el = (tag, attrs = {}, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const kid of kids) e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    return e;
  };
  async function api(method, path, body, headers = {}, retried = false) {
    const h = { ...headers };
    if (method !== "GET") { h["X-CSRF-Token"] = csrf; h["Content-Type"] = "application/json"; }
    const resp = await fetch(path, { method, headers: h, credentials: "same-origin",
                                     body: body === undefined ? undefined : JSON.stringify(body) });
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok && resp.status === 403 && data && data.error === "csrf" && method !== "GET" && !retried && who) {
      // a sign-in in another tab gave the cookie a new CSRF token: take it if the session is
      // still this page's member or key, else say so
      const before = who, now = await session();
      if (same(before, now)) return api(method, path, body, headers, true);
      throw new Error("signed in as someone else in another tab: reload this page");
    }
    if (!resp.ok) {
      const err = new Error((data && data.message) || `HTTP ${resp.status}`);
      err.status = resp.status; err.data = data; throw err;
    }
    return data;
  }
  async function session() {
    try { const s = await api("GET", "/v1/session"); csrf = s.csrf; who = s; return s; }
    catch (e) { if (e.status === 401) { who = null; return null; } throw e; }
  }
  async function signIn(kind, body) { const s = await api("POST", `/v1/session/${kind}`, body); csrf = s.csrf; who = s; return s; }
  async function signOut() { await api("POST", "/v1/session/logout", {}); csrf = ""; who = null; }
  function feed(query, onNotice, onState) {
    let last = null, ledger = null, ws = null, stopped = false, delay = 500;
    const open = () => {
      const q = new URLSearchParams(query);
      if (last) q.set("after", last);
      if (ledger) q.set("ledger", ledger);
      const qs = q.toString();
      ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/feed${qs ? "?" + qs : ""}`);
      ws.onopen = () => { delay = 500; onState && onState("live"); };
      ws.onmessage = (m) => {
        const n = JSON.parse(m.data);
        if (n.id) last = n.id;
        if (n.ledger && !n.gap) ledger = n.ledger;  // earnings frames: resume the ledger logs here
        onNotice(n);
      };
      ws.onclose = () => {
        onState && onState("reconnecting");
        if (!stopped) setTimeout(open, delay = Math.min(delay * 2, 8000));
      };
    };
    open();
    return { close() { stopped = true; ws && ws.close(); } };
  }
  let celebrating = 0;
  function celebrate(text) {
    let box = $("#confetti");
    if (!box) { box = el("div", { id: "confetti" }); document.body.append(box); }
    const colours = ["#ffb627", "#ff7b54", "#39d98a", "#5b8cff", "#ff5c7a"];
    for (let i = 0; i < 60; i++) {
      const bit = el("i");
      bit.style.left = `${Math.random() * 100}vw`;
      bit.style.background = colours[i % colours.length];
      bit.style.animationDelay = `${Math.random() * 0.6}s`;
      box.append(bit);
    }
    document.querySelectorAll("[data-celebration]").forEach((b) => b.remove());  // one at a time
    clearTimeout(celebrating);
    const banner = el("div", { class: "banner", "data-celebration": "1" }, text);
    document.body.append(banner);
    celebrating = setTimeout(() => { banner.remove(); box.replaceChildren(); }, 3500);
  }
  const when = (ts) => new Date(ts * 1000).toLocaleString();
  let tierNames = null;
  const setTierNames = (names) => { tierNames = names; };
  const tierName = (i) => (tierNames && tierNames[i]) || `tier ${i}`;
  const pts = (p) => `${p} point${p === 1 ? "" : "s"}`;
  const describe = (n) => {
    switch (n.kind) {
      case "item_redeemed": return `${n.user_id} redeemed ${n.item_name || n.item_id}${n.cost ? ` for ${pts(n.cost)}` : ""}`;
      case "item_refunded": return `${n.user_id}'s ${n.item_name || n.item_id} was refunded`;
      case "tier_changed": return `${n.user_id} reached ${(tierNames && tierNames[n.new_tier]) || "tier " + n.new_tier}`;
      case "raffle_opened": return `Raffle ${n.title || n.raffle} is open${n.price_points ? ` (${pts(n.price_points)} a ticket)` : ""}`;
      case "raffle_closed": return `Raffle ${n.title || n.raffle} closed: ${n.tickets ?? 0} tickets, ${n.entrants ?? 0} entrants`;
      case "raffle_cancelled": return `Raffle ${n.title || n.raffle} was cancelled (tickets refunded)`;
      case "voucher_refused": return `⚑ ${n.user_id}'s voucher scan was refused: ${String(n.outcome || "").replace(/^voucher_/, "")}${n.code_id ? ` (${n.code_id})` : ""}`;
      case "payout_settled": return `${n.user_id}'s payout of ${pts(n.points)} was paid (${n.sink})`;
      case "payout_dead": return `${n.user_id}'s payout of ${pts(n.points)} failed: ${n.reason || "dead"}`;
      case "payout_voided": return `${n.user_id}'s payout of ${pts(n.points)} was voided`;
      case "raffle_drawn": return `Raffle ${n.title || n.raffle}: ${(n.winners || []).join(", ") || "no winner"}`;
      case "reward_earned": return `${n.user_id} earned a ${String(n.rule || "reward").replace(/_/g, " ")} reward of ${pts(n.points)}`;
      case "earned": return `${n.user_id} earned ${pts(n.points)}`;
      case "voucher_scanned": return `${n.user_id} scanned a voucher${n.points ? ` (+${n.points})` : ""}${n.item ? ` for ${n.item}` : ""}`;
      default: return `${n.kind}${n.user_id ? " · " + n.user_id : ""}`;
    }
  };
  const celebrates = (n) => n.kind === "item_redeemed" || (n.kind === "raffle_drawn" && (n.winners || []).length > 0);
  return { $, el, api, session, signIn, signOut, feed, celebrate, when, describe, celebrates, setTierNames, tierName };
})();

// The member portal: sign-in (login link or token, or a linked wallet), balance, tier progress,
// streak, paged history, store, raffle tickets, linked wallets.
"use strict";
(() => {
  const { $, el, api } = Rally;
  const PAGE = 10;
  let me = null, cursors = [0], next = null;

  const show = (...ids) => ids.forEach((id) => $(id).classList.remove("hidden"));
  const q = () => `network=${encodeURIComponent(me.network)}`;
  const base = () => `/v1/members/${encodeURIComponent(me.user_id)}`;

  async function loadMember() {
    let m;
    try { m = await api("GET", `${base()}?${q()}`); }
    catch (e) { if (e.status === 404) { $("#balance").textContent = "0"; return; } throw e; }
    $("#balance").textContent = m.balance.toLocaleString();
    $("#lifetime").textContent = m.lifetime_points.toLocaleString();
    $("#streak").textContent = `${m.streak} day${m.streak === 1 ? "" : "s"}`;
    $("#tier").textContent = m.tier;
    if (m.next_tier) {
      const span = m.next_tier_threshold - m.tier_threshold;
      const pct = Math.max(0, Math.min(100, ((m.lifetime_points - m.tier_threshold) / span) * 100));
      $("#tier-bar").style.width = `${pct.toFixed(1)}%`;
      $("#tier-next").textContent = `${m.points_to_next_tier.toLocaleString()} points to ${m.next_tier}`;
    } else {
      $("#tier-bar").style.width = "100%";
      $("#tier-next").textContent = "Top tier reached";
    }
  }

  let shown = 0;
  async function loadLedger(i) {
    const page = await api("GET", `${base()}/ledger?${q()}&limit=${PAGE}&cursor=${cursors[i]}`);
    const rows = page.entries.map((e) => {
      const mine = e.credit === `member:${me.network}:${me.user_id}`;
      return el("tr", {}, el("td", {}, Rally.when(e.ts)), el("td", {}, e.rule),
                el("td", {}, e.channel || ""), el("td", {}, `${mine ? "+" : "−"}${e.amount}`));
    });
    $("#ledger").replaceChildren(...rows);
    next = page.next_cursor;
    if (next !== null) cursors[i + 1] = next;
    $("#older").disabled = next === null;
    $("#newer").disabled = i === 0;
    $("#page").textContent = `page ${i + 1}`;
    shown = i;
    $("#older").onclick = () => loadLedger(i + 1);
    $("#newer").onclick = () => loadLedger(i - 1);
  }

  async function redeem(item, button) {
    button.disabled = true;
    const msg = $("#store-msg");
    try {
      const key = `portal-${crypto.randomUUID ? crypto.randomUUID() : Date.now() + Math.random()}`;
      await api("POST", `${base()}/redemptions?${q()}`, { item_id: item.id }, { "Idempotency-Key": key });
      msg.className = "msg good"; msg.textContent = `Redeemed ${item.name}!`;
      Rally.celebrate(`${item.name} is yours!`);
      await Promise.all([loadMember(), loadItems(), loadLedger(0)]);
    } catch (e) {
      msg.className = "msg bad"; msg.textContent = e.message;
    } finally { button.disabled = false; }
  }

  async function loadItems() {
    const { items } = await api("GET", `/v1/store/items?${q()}`);
    const rows = items.map((it) => {
      const b = el("button", { "data-item": it.id }, "Redeem");
      b.addEventListener("click", () => redeem(it, b));
      const stock = it.stock === null || it.stock === undefined ? "" : ` · ${it.stock} left`;
      return el("div", { class: "row" }, el("span", {}, el("strong", {}, it.name),
                el("br"), el("span", { class: "dim" }, `${it.cost} points${stock}`)), b);
    });
    $("#items").replaceChildren(...(rows.length ? rows : [el("span", { class: "dim" }, "Nothing in the store yet.")]));
  }

  async function buyTicket(r, button) {  // points into a raffle ticket
    button.disabled = true;
    const msg = $("#raffle-msg");
    try {
      const key = `portal-${crypto.randomUUID ? crypto.randomUUID() : Date.now() + Math.random()}`;
      await api("POST", `/v1/raffles/${encodeURIComponent(r.raffle)}/tickets?${q()}`, { tickets: 1 }, { "Idempotency-Key": key });
      msg.className = "msg good"; msg.textContent = `One more ticket for ${r.title || r.raffle}`;
      await Promise.all([loadMember(), loadTickets(), loadLedger(0)]);
    } catch (e) {
      msg.className = "msg bad"; msg.textContent = e.message;
    } finally { button.disabled = false; }
  }

  async function loadTickets() {
    let data;
    try { data = await api("GET", `${base()}/raffles?${q()}`); } catch (e) { return; }
    $("#open-raffles").replaceChildren(...(data.open || []).map((r) => {
      const full = r.tickets >= r.max_tickets_per_member;
      const b = el("button", { "data-raffle": r.raffle }, r.price_points ? `Buy · ${r.price_points} pts` : "Enter");
      b.disabled = full;
      b.addEventListener("click", () => buyTicket(r, b));
      return el("div", { class: "row", "data-open-raffle": r.raffle },
        el("span", {}, el("strong", {}, r.title || r.raffle), el("br"),
           el("span", { class: "dim" }, `open · you hold ${r.tickets} of ${r.max_tickets_per_member}`)), b);
    }));
    if (!data.raffles.length) return;
    $("#tickets").replaceChildren(...data.raffles.map((r) => el("div", { class: "row" },
      el("span", {}, el("strong", {}, r.title || r.raffle), el("br"),
         el("span", { class: "dim" }, `${r.tickets} ticket${r.tickets === 1 ? "" : "s"} · ${r.status}${r.won ? " · you won!" : ""}`)),
      el("a", { href: `/v1/raffles/${encodeURIComponent(r.raffle)}/verify?${q()}`, target: "_blank", rel: "noopener" }, "verify"))));
  }

  async function loadWallets() {
    let data;
    try { data = await api("GET", `${base()}/wallets?${q()}`); } catch (e) { return; }  // no chain: no panel
    show("#wallets");
    if (window.ethereum && !$("#wallet-link")) {  // an injected wallet: Sign-In with Ethereum
      const b = el("button", { id: "wallet-link", class: "ghost" }, "Link a wallet");
      b.addEventListener("click", () => linkWallet().catch((e) => { $("#wallet-msg").className = "msg bad"; $("#wallet-msg").textContent = e.message; }));
      $("#wallets").append(b, el("p", { id: "wallet-msg", class: "msg" }));
    }
    if (!data.wallets.length) return;
    $("#wallet-list").replaceChildren(...data.wallets.map((w, i) => el("div", { class: "row", "data-wallet": w },
      el("code", {}, w), el("span", { class: "dim" }, i === 0 ? "payouts go here" : ""))));
  }

  // Sign-In with Ethereum: the wallet (window.ethereum, EIP-1193) signs the message the gateway
  // issued, with its address put in; personal_sign takes the message's UTF-8 bytes in hex
  async function siwe(issued) {
    const [address] = await window.ethereum.request({ method: "eth_requestAccounts" });
    const message = issued.message.replace("0x{address}", address);
    const hex = "0x" + Array.from(new TextEncoder().encode(message), (x) => x.toString(16).padStart(2, "0")).join("");
    const signature = await window.ethereum.request({ method: "personal_sign", params: [hex, address] });
    return { address, message, signature };
  }

  async function linkWallet() {
    const { address, message, signature } = await siwe(await api("POST", `${base()}/wallets/nonce?${q()}`, {}));
    await api("POST", `${base()}/wallets?${q()}`, { message, signature });
    $("#wallet-msg").className = "msg good"; $("#wallet-msg").textContent = `Linked ${address}`;
    await loadWallets();
  }

  function live() {
    Rally.feed({ earnings: 1 }, (n) => {
      if (n.gap) return;
      $("#feed").prepend(el("li", { class: Rally.celebrates(n) ? "celebrate" : "", "data-kind": n.kind },
                            el("span", { class: "pill" }, n.kind.replace("_", " ")), " ", Rally.describe(n)));
      if (n.kind === "raffle_drawn" && (n.winners || []).includes(me.user_id)) Rally.celebrate("You won!");
      if (n.kind.startsWith("raffle_")) loadTickets().catch(() => {});
      loadMember();
      if (n.kind === "earned" && shown === 0) loadLedger(0).catch(() => {});  // the newest page shows it
    }, (state) => { $("#feed-state").textContent = state; });
  }

  async function walletSignIn() {  // the network: ?network= in the portal's address, else the default
    const network = new URLSearchParams(location.search).get("network");
    const issued = await api("POST", "/v1/session/wallet/nonce", network ? { network } : {});
    const { message, signature } = await siwe(issued);
    await Rally.signIn("wallet", { message, signature, network: issued.network });
  }

  async function start() {
    const hash = new URLSearchParams(location.hash.slice(1));
    const token = hash.get("login");
    if (token) {
      history.replaceState(null, "", location.pathname);
      try { await Rally.signIn("member", { token }); }
      catch (e) { show("#signin"); $("#signin-msg").textContent = e.message; return; }
    }
    const s = await Rally.session();
    if (!s || s.scope !== "member") {
      show("#signin");
      $("#signin-form").addEventListener("submit", async (ev) => {
        ev.preventDefault();
        try { await Rally.signIn("member", { token: $("#token").value.trim() }); location.reload(); }
        catch (e) { $("#signin-msg").textContent = e.message; }
      });
      if (window.ethereum) {
        show("#wallet-signin");
        $("#wallet-signin-btn").addEventListener("click", async (ev) => {
          ev.target.disabled = true;
          try { await walletSignIn(); location.reload(); }
          catch (e) { $("#signin-msg").textContent = e.message; ev.target.disabled = false; }
        });
      }
      return;
    }
    me = s;
    $("#who").textContent = `${s.user_id} · ${s.network}`;
    show("#signout", "#points", "#tier-card", "#store", "#raffles", "#history", "#live");
    $("#signout").addEventListener("click", async () => { await Rally.signOut(); location.reload(); });
    await Promise.all([loadMember(), loadLedger(0), loadItems(), loadTickets(), loadWallets()]);
    document.body.dataset.ready = "1";
    live();
  }
  // a sign-in link opened in a tab already on the portal changes only the fragment: sign in again
  window.addEventListener("hashchange", () => { if (new URLSearchParams(location.hash.slice(1)).get("login")) location.reload(); });
  start().catch((e) => { document.body.append(el("p", { class: "msg bad" }, e.message)); });
})();

// The admin dashboard of one network: live feed with celebrations, pipeline health,
// tier mix, top members, and managing chat commands, raffles, store items and voucher batches.
"use strict";
(() => {
  const { $, el, api } = Rally;
  let net = "", lastStats = null, lastTs = 0;
  const q = () => `network=${encodeURIComponent(net)}`;
  const show = (...ids) => ids.forEach((id) => $(id).classList.remove("hidden"));
  const say = (id, text, good) => { const m = $(id); m.className = `msg ${good ? "good" : "bad"}`; m.textContent = text; };

  async function overview() {
    const o = await api("GET", `/v1/admin/overview?${q()}`);
    if (lastStats) {
      const dt = o.ts - lastTs;
      const eps = ((o.stats.events_in || 0) - (lastStats.events_in || 0)) / Math.max(dt, 0.001);
      $("#eps").textContent = (eps > 0 && eps < 10 ? eps.toFixed(1) : Math.max(0, eps).toFixed(0));
    }
    lastStats = o.stats; lastTs = o.ts;
    $("#backlog").textContent = o.backlog.toLocaleString();
    $("#dead").textContent = o.dead_letters;
    $("#ready").textContent = o.ready ? "ready" : "not ready";
    $("#ready").className = `pill ${o.ready ? "ok" : "err"}`;
    $("#shards").replaceChildren(...o.shards.map((s) => el("tr", {}, el("td", {}, s.shard),
      el("td", {}, el("span", { class: `pill ${s.state === "running" ? "ok" : s.state === "absent" ? "" : "warn"}` }, s.state)),
      el("td", {}, `lag ${s.lag}`))));
    Rally.setTierNames(Object.keys(o.tiers));
    const total = Object.values(o.tiers).reduce((a, b) => a + b, 0) || 1;
    $("#tier-mix").replaceChildren(...Object.entries(o.tiers).map(([name, n]) => el("div", {},
      el("div", { class: "row" }, el("span", {}, name), el("span", { class: "dim", "data-tier": name }, n)),
      (() => { const bar = el("div", { class: "bar" }, el("div")); bar.firstChild.style.width = `${(100 * n) / total}%`; return bar; })())));
    const sel = $("#channel");
    if (sel.options.length !== o.channels.length) {
      const keep = sel.value;
      sel.replaceChildren(...o.channels.map((c) => el("option", { value: c }, c)));
      if (keep) sel.value = keep;
      leaders();
    }
    const cmdSel = $("#command-channel");
    if (cmdSel.options.length !== o.channels.length + 1) {
      const keep = cmdSel.value;
      cmdSel.replaceChildren(el("option", { value: "*" }, "*"), ...o.channels.map((c) => el("option", { value: c }, c)));
      cmdSel.value = keep || "*";
    }
    if (o.panels.payouts && !panels.payouts) { panels.payouts = true; show("#payouts"); payouts().catch(() => {}); }
    if (o.panels.analytics && !panels.analytics) { panels.analytics = true; show("#analytics"); analytics().catch(() => {}); }
  }
  const panels = { payouts: false, analytics: false };

  async function payouts() {
    const status = $("#payout-status").value;
    const [{ payouts: list }, { payouts: dead }] = await Promise.all([
      api("GET", `/v1/payouts?${q()}&limit=50${status ? "&status=" + status : ""}`),
      api("GET", `/v1/payouts?${q()}&limit=1000&status=dead`)]);
    $("#payout-dead").textContent = `${dead.length} dead`;
    $("#payout-dead").className = `pill ${dead.length ? "err" : "ok"}`;
    const op = (p, name) => {
      const b = el("button", { class: "ghost", "data-op": name }, name);
      b.addEventListener("click", async () => {
        try { await api("POST", `/v1/payouts/${encodeURIComponent(p.id)}/${name}?${q()}`, {}); say("#payout-msg", `${p.id}: ${name} done`, true); }
        catch (e) { say("#payout-msg", `${p.id}: ${e.message}`); }
        payouts().catch(() => {});
      });
      return b;
    };
    $("#payout-list").replaceChildren(...list.map((p) => el("tr", { "data-payout": p.id },
      el("td", {}, p.user_id), el("td", {}, `${p.points.toLocaleString()} pts`), el("td", { class: "dim" }, `${p.sink}${p.destination ? " → " + p.destination : ""}`),
      el("td", {}, el("span", { class: `pill ${p.status === "dead" ? "err" : p.status === "settled" ? "ok" : ""}`, "data-status": "1", title: p.reason || "" }, p.status)),
      el("td", { class: "dim" }, p.reason || ""),
      el("td", {}, ...(p.status === "dead" ? [op(p, "retry"), " "] : []),
         ...(["requested", "reserved", "dead"].includes(p.status) ? [op(p, "void")] : [])))));
  }

  const label = (k) => k.replace(/_/g, " ");
  async function analytics() {
    let rep;
    try { rep = await api("GET", `/v1/analytics/kpis?${q()}`); }
    catch (e) { $("#kpis").replaceChildren(el("p", { class: "dim" }, e.status === 404 ? "No analytics snapshot yet (rally analytics snapshot)." : e.message)); return; }
    const day = (d) => new Date(d * 86400000).toISOString().slice(0, 10);
    $("#analytics-scope").textContent = `${day(rep.scope.first_day)} – ${day(rep.scope.last_day)}`;
    const rows = [], charts = [];
    for (const [name, v] of Object.entries(rep)) {
      if (name === "scope" || name === "snapshot" || v === null) continue;
      if (Array.isArray(v)) {
        if (!v.length) continue;
        const keys = Object.keys(v[0]);
        const dayLike = (k) => /day|cohort|^ts$/.test(k);
        const lab = keys.find((k) => k !== "network") || keys[0];  // top_channels: the channel, not its network
        const num = keys.filter((k) => k !== lab && typeof v[0][k] === "number" && !dayLike(k) && !/rank|tier$|_id$/.test(k))[0];
        if (!num) continue;
        const top = dayLike(lab) ? v.slice(-12) : v.slice(0, 12), max = Math.max(...top.map((r) => Math.abs(r[num]) || 0), 1);
        charts.push(el("div", { class: "chart", "data-chart": name }, el("h3", {}, `${label(name)} · ${label(num)}`),
          ...top.map((r) => { const bar = el("div", { class: "bar" }, el("div")); bar.firstChild.style.width = `${(100 * Math.abs(r[num] || 0)) / max}%`;
            return el("div", {}, el("div", { class: "row" }, el("span", {}, dayLike(lab) && typeof r[lab] === "number" ? day(r[lab]) : lab === "tier" ? Rally.tierName(r[lab]) : String(r[lab])), el("span", { class: "dim" }, Number(r[num]).toLocaleString())), bar); })));
      } else if (typeof v === "object") {
        for (const [k, x] of Object.entries(v)) {
          if (typeof x !== "number") continue;
          rows.push(el("div", { class: "row", "data-kpi": `${name}.${k}` }, el("span", {}, `${label(name)} · ${label(k)}`),
            el("strong", {}, Number.isInteger(x) ? x.toLocaleString() : x.toFixed(3))));
        }
      }
    }
    $("#kpis").replaceChildren(...rows);
    $("#charts").replaceChildren(...charts);
  }

  let earnedWindow = [];
  function earnedRate() {  // points/s over the last 5 s of `earnings` frames
    const now = Date.now() / 1000;
    earnedWindow = earnedWindow.filter(([t]) => t > now - 5);
    $("#earned-rate").textContent = (earnedWindow.reduce((a, [, p]) => a + p, 0) / 5).toFixed(0);
  }
  function earnings(n) {
    earnedWindow.push([Date.now() / 1000, n.points]);
    earnedRate();
    $("#earners").textContent = (n.top || []).map((t) => `${t.user_id} +${t.points}`).join(", ") || "–";
  }

  async function leaders() {
    const c = $("#channel").value;
    if (!c) return;
    const lb = await api("GET", `/v1/channels/${encodeURIComponent(c)}/leaderboard?${q()}&limit=10`);
    $("#leaders").replaceChildren(...lb.entries.map((e) => el("tr", {}, el("td", {}, `#${e.rank}`),
      el("td", {}, e.name || e.user_id), el("td", {}, e.points.toLocaleString()))));
  }

  const cmdPath = (name) => `/v1/channels/${encodeURIComponent($("#command-channel").value || "*")}/commands${name ? "/" + encodeURIComponent(name) : ""}?${q()}`;
  async function commands() {
    const { commands: list } = await api("GET", cmdPath());
    $("#command-list").replaceChildren(...(list.length ? list.map((c) => {
      const del = el("button", { class: "ghost", "data-op": "delete" }, "delete");
      del.addEventListener("click", async () => {
        try { await api("DELETE", cmdPath(c.name)); say("#command-msg", `!${c.name} deleted`, true); }
        catch (e) { say("#command-msg", `!${c.name}: ${e.message}`); }
        commands().catch(() => {});
      });
      const rules = [c.min_role !== "everyone" ? c.min_role : "", c.cooldown_user_s ? `${c.cooldown_user_s}s per viewer` : "",
                     c.cost_points ? `${c.cost_points} pts` : "", c.availability !== "always" ? `${c.availability} only` : "",
                     c.enabled ? "" : "off"].filter(Boolean).join(" · ");
      return el("div", { class: "row", "data-command": c.name },
        el("span", {}, el("strong", {}, `!${c.name}`), " ", el("span", { class: "dim" }, rules), el("br"), el("span", { class: "dim" }, c.response || "(built-in reply)")),
        del);
    }) : [el("span", { class: "dim" }, "No commands stored for this channel.")]));
  }

  async function raffles() {
    const { raffles: list } = await api("GET", `/v1/raffles?${q()}&limit=20`);
    $("#raffle-list").replaceChildren(...list.map((r) => {
      const id = r.raffle || (r.terms && r.terms.id);
      const op = (name, body) => {
        const b = el("button", { class: "ghost", "data-op": name }, name);
        b.addEventListener("click", async () => {
          try { await api("POST", `/v1/raffles/${encodeURIComponent(id)}/${name}?${q()}`, body); say("#raffle-msg", `${id}: ${name} done`, true); }
          catch (e) { say("#raffle-msg", `${id}: ${e.message}`); }
          raffles();
        });
        return b;
      };
      const beacon = { beacon: { source: "admin", value: `dash-${Date.now()}-${Math.random().toString(16).slice(2)}`, ref: "dashboard" } };
      const extra = [r.commitment ? `commitment ${String(r.commitment).slice(0, 16)}…` : "",
                     r.root ? `Merkle root ${String(r.root).slice(0, 12)}…` : "",
                     (r.winners || []).length ? `winners ${(r.winners || []).map((w) => w.user_id || w).join(", ")}` : ""].filter(Boolean).join(" · ");
      return el("div", { class: "row", "data-raffle": id },
        el("span", {}, el("strong", {}, (r.terms && r.terms.title) || id), " ", el("span", { class: "pill", "data-status": "1" }, r.status), el("br"),
           el("span", { class: "dim" }, extra)),
        el("span", {}, op("open"), " ", op("close"), " ", op("draw", beacon), " ",
           el("a", { href: `/v1/raffles/${encodeURIComponent(id)}/verify?${q()}`, target: "_blank", rel: "noopener" }, "verify")));
    }));
  }

  async function items() {
    const { items: list } = await api("GET", `/v1/store/items?${q()}`);
    $("#item-list").replaceChildren(...list.map((it) => el("div", { class: "row" },
      el("span", {}, el("strong", {}, it.name), " ", el("span", { class: "dim" }, it.id)),
      el("span", { class: "dim" }, `${it.cost} pts · ${it.stock === null ? "∞" : it.stock} left${it.enabled ? "" : " · off"}`))));
  }

  async function batches() {
    const { batches: list } = await api("GET", `/v1/vouchers/batches?${q()}`);
    $("#batch-list").replaceChildren(...list.map((b) => el("div", { class: "row" },
      el("span", {}, el("strong", {}, b.id || b.batch), " ", el("span", { class: "dim" }, `${b.count} codes`)),
      el("span", { class: "dim" }, `${b.redeemed ?? 0} redeemed`))));
  }

  async function scans() {
    const { attempts } = await api("GET", `/v1/vouchers/attempts?${q()}&limit=15`);
    $("#scan-list").replaceChildren(...attempts.map((a) => {
      const ok = a.outcome === "redeemed" || a.outcome === "resumed";
      return el("tr", { "data-outcome": a.outcome }, el("td", {}, Rally.when(a.ts)), el("td", {}, a.user_id),
        el("td", {}, el("span", { class: `pill ${ok ? "ok" : "err"}`, title: a.detail || "" }, ok ? a.outcome : `⚑ ${a.outcome}`)),
        el("td", { class: "dim" }, a.code_sha256 || ""));
    }));
  }

  function forms() {
    $("#command-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const name = $("#command-name").value.trim().replace(/^!/, "").toLowerCase();
      const spec = { response: $("#command-response").value, min_role: $("#command-role").value,
                     cooldown_user_s: Number($("#command-cooldown").value || 0), cost_points: Number($("#command-cost").value || 0),
                     availability: $("#command-availability").value };
      try { await api("PUT", cmdPath(name), spec); say("#command-msg", `!${name} saved`, true); }
      catch (e) { say("#command-msg", e.data && e.data.field ? `${e.data.field}: ${e.message}` : e.message); }
      commands().catch(() => {});
    });
    $("#command-channel").addEventListener("change", () => commands().catch((e) => say("#command-msg", e.message)));
    $("#raffle-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const terms = { id: $("#raffle-id").value.trim(), network: net, title: $("#raffle-title").value,
                      price_points: Number($("#raffle-price").value || 0), winners: Number($("#raffle-winners").value || 1),
                      max_tickets_per_member: 100 };
      try { await api("POST", `/v1/raffles?${q()}`, terms); say("#raffle-msg", `created ${terms.id}`, true); }
      catch (e) { say("#raffle-msg", e.message); }
      raffles();
    });
    $("#item-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const spec = { name: $("#item-name").value, cost: Number($("#item-cost").value) };
      if ($("#item-stock").value !== "") spec.stock = Number($("#item-stock").value);
      try { await api("PUT", `/v1/store/items/${encodeURIComponent($("#item-id").value.trim())}?${q()}`, spec); say("#item-msg", "saved", true); }
      catch (e) { say("#item-msg", e.message); }
      items();
    });
    $("#voucher-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const req = { count: Number($("#voucher-count").value), points: Number($("#voucher-points").value),
                    expires_in_s: Number($("#voucher-days").value) * 86400 };
      try {
        const minted = await api("POST", `/v1/vouchers/batches?${q()}`, req);
        const sheet = await fetch(`/v1/admin/voucher-sheet?${q()}`, { method: "POST", credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": (await Rally.session()).csrf },
          body: JSON.stringify({ batch: minted.batch.id, codes: minted.codes }) });
        if (!sheet.ok) throw new Error(`QR sheet: HTTP ${sheet.status}`);
        const url = URL.createObjectURL(await sheet.blob());
        const a = el("a", { href: url, download: `vouchers-${minted.batch.id}.html` }, "download");
        document.body.append(a); a.click(); a.remove();
        say("#voucher-msg", `minted ${minted.codes.length} codes (batch ${minted.batch.id})`, true);
      } catch (e) { say("#voucher-msg", e.message); }
      batches();
    });
    $("#channel").addEventListener("change", leaders);
    $("#payout-status").addEventListener("change", () => payouts().catch((e) => say("#payout-msg", e.message)));
  }

  function live() {
    Rally.feed({ network: net, earnings: 1 }, (n) => {
      if (n.gap) { $("#feed").prepend(el("li", {}, "… older notices skipped")); return; }
      if (n.kind === "earnings") { earnings(n); return; }  // summed per interval: a figure, not a line
      const li = el("li", { class: Rally.celebrates(n) ? "celebrate" : n.kind === "voucher_refused" ? "flagged" : "", "data-kind": n.kind },
                    el("span", { class: "pill" }, n.kind.replace("_", " ")), " ", Rally.describe(n));
      $("#feed").prepend(li);
      while ($("#feed").children.length > 200) $("#feed").lastChild.remove();
      if (n.kind === "item_redeemed") Rally.celebrate(`${n.user_id} redeemed ${n.item_name || n.item_id}!`);
      if (n.kind === "raffle_drawn" && (n.winners || []).length) Rally.celebrate(`${n.winners.join(", ")} won ${n.title || n.raffle}!`);
      if (n.kind.startsWith("raffle_")) raffles();
      if (n.kind.startsWith("voucher_")) scans().catch(() => {});
      if (n.kind.startsWith("payout_") && panels.payouts) payouts().catch(() => {});
      if (n.kind === "tier_changed") overview().catch(() => {});
    }, (state) => { $("#feed-state").textContent = state; $("#feed-state").className = `pill ${state === "live" ? "ok" : "warn"}`; });
  }

  async function start() {
    const s = await Rally.session();
    if (!s || s.scope !== "admin") {
      show("#signin");
      $("#signin-form").addEventListener("submit", async (ev) => {
        ev.preventDefault();
        try {
          await Rally.signIn("admin", { network: $("#network").value.trim(), key: $("#key").value.trim(), secret: $("#secret").value });
          location.reload();
        } catch (e) { $("#signin-msg").textContent = e.message; }
      });
      return;
    }
    net = s.network;
    $("#who").textContent = `${s.key} · ${net}`;
    show("#signout", "#live", "#health", "#tiers", "#top", "#commands", "#raffles", "#store", "#vouchers", "#scans");
    $("#signout").addEventListener("click", async () => { await Rally.signOut(); location.reload(); });
    forms();
    live();
    const safe = (fn) => fn().catch((e) => console.warn(e));
    await Promise.all([safe(overview), safe(commands), safe(raffles), safe(items), safe(batches), safe(scans)]);
    document.body.dataset.ready = "1";
    setInterval(() => safe(overview), 2000);
    setInterval(earnedRate, 1000);
    setInterval(() => safe(leaders), 5000);
    setInterval(() => safe(scans), 10000);
    setInterval(() => { if (panels.payouts) safe(payouts); }, 5000);
    setInterval(() => { if (panels.analytics) safe(analytics); }, 60000);
  }
  start().catch((e) => { document.body.append(el("p", { class: "msg bad" }, e.message)); });
})();

"use strict";
// The staff page: plain DOM, no framework. Every value shown comes from the daemon already
// worded and formatted for the reader's language (textContent only: no markup from data).
const S = { csrf: null, lang: null, words: {}, zones: [], count: null, reception: null,
            live: null, roles: [], desk: null, line: null, finder: null, handhelds: [],
            deskSeq: null };
const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && S.csrf) headers["X-CSRF-Token"] = S.csrf;
  const sep = path.includes("?") ? "&" : "?";
  const url = path.startsWith("/api/v1/page") && S.lang ? `${path}${sep}lang=${S.lang}` : path;
  const r = await fetch(url, { method, headers, credentials: "same-origin",
                               body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) { const e = new Error(data.error || r.status); e.status = r.status; throw e; }
  return data;
}

// "Missing: " / "Manquants : " (French puts a narrow no-break space before the colon).
function lab(key) { return `${S.words[key] || key}${S.words.sep || ": "}`; }

function words() {
  document.querySelectorAll("[data-w]").forEach((e) => {
    const w = S.words[e.dataset.w]; if (w) e.textContent = w;
  });
  document.querySelectorAll("[data-wl]").forEach((e) => { e.textContent = lab(e.dataset.wl); });
  document.querySelectorAll("[data-ph]").forEach((e) => { e.placeholder = S.words[e.dataset.ph] || ""; });
  document.documentElement.lang = S.lang || "en";
  document.querySelectorAll(".langs button").forEach((b) =>
    b.setAttribute("aria-pressed", String(b.dataset.lang === S.lang)));
}

async function loadContext() {
  const ctx = await api("GET", "/api/v1/page/context");
  S.lang = ctx.lang; S.words = ctx.words; S.zones = ctx.zones;
  $("site").textContent = ctx.site; $("user").textContent = ctx.user;
  words();
  const zones = $("zones"); zones.replaceChildren();
  // no zone ticked, nothing to count: the button says so by being disabled, not by ignoring a tap
  const ticked = () => { $("start-count").disabled = !zones.querySelector("input.zone:checked"); };
  for (const z of ctx.zones) {
    const l = el("label"); const c = el("input"); c.type = "checkbox"; c.value = z;
    c.className = "zone"; c.onchange = ticked;
    l.append(c, el("span", (ctx.zone_labels || {})[z] || z)); zones.append(l);
  }
  ticked();
  $("start-count").hidden = false;  // hidden again below if a count is running
  const running = ctx.counts.find((c) => c.status === "running");
  if (running) followCount(running.session_id);
  followLine();
  api("GET", "/api/v1/floor/handhelds").then((d) => { S.handhelds = d.handhelds; }).catch(() => {});
}

function signedIn(on) {
  $("sign-in-form").hidden = on;
  $("tabs").hidden = !on; $("sign-out").hidden = !on; $("floor-toggle").hidden = !on;
  if (!on) {
    document.querySelectorAll(".tab").forEach((t) => { t.hidden = true; });
    for (const k of ["line", "desk", "finder"]) { if (S[k]) { S[k].close(); S[k] = null; } }
  }
}

async function start() {
  const qs = new URLSearchParams(location.search);
  S.lang = qs.get("lang");
  // 200 either way (a 401 here would be an error in the console of every first visit)
  const me = await api("GET", "/api/v1/session/state").catch(() => ({ signed_in: false }));
  if (me.signed_in) {
    S.csrf = me.csrf; S.roles = me.user.roles || []; signedIn(true);
    try { await loadContext(); show("count"); return; } catch (_) { /* signed out since */ }
  }
  signedIn(false);
  try { const ctx = await fetch("/words.json").then((r) => r.json());
        const lang = S.lang || (navigator.language || "en").slice(0, 2);
        S.lang = ctx[lang] ? lang : "en"; S.words = ctx[S.lang]; words(); } catch (_) {}
}

function show(tab) {
  document.querySelectorAll(".tab").forEach((t) => { t.hidden = t.id !== `tab-${tab}`; });
  document.querySelectorAll("nav button").forEach((b) =>
    b.toggleAttribute("aria-current", b.dataset.tab === tab));
  const load = { reception: loadReceptions, replenish: loadReplenish, alerts: loadAlerts,
                 charts: loadCharts, holds: loadHolds }[tab];
  if (load) load().catch(() => {});
  if (tab === "find" || tab === "holds") followDesk(); else stopDesk();
}

function productLine(m) {
  const li = el("li", [m.name, m.size, m.colour].filter(Boolean).join(" · "));
  li.append(el("small", `${m.epc || ""} ${m.zone ? "— " + m.zone : ""}`));
  return li;
}

function stopLive() { if (S.live) { S.live.close(); S.live = null; } }

function followCount(cid) {
  stopLive(); S.count = cid;
  $("count-live").hidden = false; $("count-report").hidden = true;
  $("start-count").hidden = true;  // this count first: close it, then start the next
  S.live = new EventSource(`/api/v1/page/counts/${encodeURIComponent(cid)}/live?lang=${S.lang}`);
  S.live.onmessage = (ev) => {
    const d = JSON.parse(ev.data);
    if (d.status !== "running") { stopLive(); showReport(d); return; }
    $("count-headline").textContent = d.headline;
    $("count-bar").style.width = `${Math.round(100 * d.ratio)}%`;
    $("missing-total").textContent = d.missing_total;
    $("missing-list").replaceChildren(...d.missing.map(productLine));
  };
}

function showReport(d) {
  $("count-live").hidden = true; $("count-report").hidden = false; $("start-count").hidden = false;
  $("report-headline").textContent = d.headline;
  $("report-accuracy").textContent = d.accuracy || "";
  $("report-missing").replaceChildren(...(d.missing || []).map(productLine));
  $("report-unexpected").replaceChildren(...(d.unexpected || []).map(productLine));
}

async function startCount() {
  const zones = [...document.querySelectorAll("input.zone:checked")].map((c) => c.value);
  if (!zones.length) return;
  const c = await api("POST", "/api/v1/ops/counts", { zones });
  followCount(c.session_id);
}

async function closeCount() {
  if (!S.count) return;
  stopLive();
  await api("POST", `/api/v1/ops/counts/${encodeURIComponent(S.count)}/stop`);
  showReport(await api("GET", `/api/v1/page/counts/${encodeURIComponent(S.count)}`));
}

async function loadReceptions() {
  const d = await api("GET", "/api/v1/page/receptions");
  const open = d.receptions.filter((r) => r.status === "open");
  const list = $("reception-list"); list.replaceChildren();
  if (!open.length) list.append(el("li", S.words.no_reception));
  for (const r of open) {
    const li = el("li"); const btn = el("button", `${(r.asn_ids || []).join(", ")} — ${r.opened_text}`);
    btn.className = "reception-open"; btn.onclick = () => followReception(r.session_id);
    li.append(btn); list.append(li);
  }
  if (open.length === 1) followReception(open[0].session_id);
}

function followReception(sid) {
  stopLive(); S.reception = sid; $("reception-live").hidden = false;
  $("reception-status").textContent = "";
  S.live = new EventSource(`/api/v1/page/receptions/${encodeURIComponent(sid)}/live?lang=${S.lang}`);
  S.live.onmessage = (ev) => renderReception(JSON.parse(ev.data));
}

function renderReception(d) {
  $("reception-headline").textContent = d.headline;
  $("reception-lines").replaceChildren(...d.lines.map((ln) => {
    const tr = el("tr"); if (ln.received >= ln.expected) tr.className = "done";
    tr.append(el("td", [ln.name || ln.sku || ln.gtin, ln.size, ln.colour].filter(Boolean).join(" · ")),
              el("td", ln.expected_text, "num"),
              el("td", ln.received_text, "num"));
    return tr;
  }));
  $("reception-missing").textContent = d.missing;
  $("reception-unexpected").textContent = d.unexpected;
  if (d.status === "closed") { stopLive(); $("reception-status").textContent = S.words.closed; }
}

async function closeReception() {
  if (!S.reception) return;
  stopLive();
  await api("POST", `/api/v1/ops/receptions/${encodeURIComponent(S.reception)}/close`,
            { note: $("reception-note").value });
  renderReception(await api("GET", `/api/v1/page/receptions/${encodeURIComponent(S.reception)}`));
}

function itemCard(r) {
  const card = el("div", null, "panel result");
  card.append(el("h3", [r.name, r.size, r.colour].filter(Boolean).join(" · ")),
              el("p", `${lab("where")}${r.where_text || r.zone || "—"}`, r.present === false ? "missing" : ""),
              el("p", `${lab("state")}${r.state_text || r.state || r.disposition || "—"}`),
              ...(r.price ? [el("p", `${lab("price")}${r.price}`)] : []),
              el("p", `${lab("last_seen")}${r.last_seen || "—"}`),
              el("small", r.epc));
  if (r.history.length) {
    const ul = el("ul", null, "lines");
    for (const h of r.history) ul.append(el("li", [h.when, h.step_text || h.biz_step || h.step || "", h.where_text || h.zone || h.site || ""].filter(Boolean).join(" · ")));
    card.append(el("h4", S.words.history), ul);
  }
  const acts = el("div", null, "actions");
  const hold = el("button", S.words.place_hold, "hold-this");
  hold.onclick = () => { $("hold-epc").value = r.epc; show("holds"); $("hold-client").focus(); };
  acts.append(hold);
  for (const h of S.handhelds) {
    const b = el("button", h.label, "find-handheld"); b.dataset.reader = h.reader;
    b.onclick = () => startFinder(h.reader, r.epc, card).catch((e) => alert(e.message));
    acts.append(b);
  }
  card.append(acts);
  return card;
}

async function find(ev) {
  ev.preventDefault();
  const q = $("find-q").value.trim(); if (!q) return;
  const d = await api("GET", `/api/v1/floor/find?q=${encodeURIComponent(q)}`);
  const box = $("find-results"); box.replaceChildren();
  if (!d.results.length) box.append(el("p", S.words.nothing_found));
  for (const r of d.results) box.append(itemCard(r));
}

// The item a staff member puts on the desk reader shows up by itself (server-sent events).
function followDesk() {
  if (S.desk) return;
  $("desk").hidden = false; S.deskSeq = null;
  S.desk = new EventSource(`/api/v1/floor/desk/live?lang=${S.lang}`);
  S.desk.onmessage = (ev) => {
    const d = JSON.parse(ev.data);
    const box = $("desk-item");
    if (!d.item) { if (S.deskSeq === null) S.deskSeq = 0; box.replaceChildren(el("p", d.waiting_text, "note")); return; }
    const card = itemCard(d.item); card.id = "desk-card";
    card.prepend(el("p", `${d.zone} · ${d.at_text}`, "note"));
    box.replaceChildren(card);
    // What was on the desk before the page looked is shown, not used; a new scan fills the
    // holds form unless the staff member typed an EPC there.
    const field = $("hold-epc");
    if (S.deskSeq === null) S.deskSeq = d.seq;
    else if (d.seq !== S.deskSeq) {
      S.deskSeq = d.seq;
      if (!field.value || field.dataset.desk === "1") { field.value = d.item.epc; field.dataset.desk = "1"; }
    }
  };
}

function stopDesk() { if (S.desk) { S.desk.close(); S.desk = null; } }

// "Find this item": the handheld's RSSI of one EPC, live, as a bar that fills as it nears.
async function startFinder(reader, epc, card) {
  await stopFinder();
  const box = el("div", null, "proximity"); box.id = "proximity";
  const bar = el("div", null, "bar"); const fill = el("div", null, "fill"); fill.id = "proximity-bar";
  bar.append(fill);
  const text = el("p", S.words.not_heard); text.id = "proximity-text";
  const stop = el("button", S.words.stop_finding); stop.id = "stop-finding";
  stop.onclick = () => stopFinder().catch(() => {});
  box.append(bar, text, stop); card.append(box);
  box.scrollIntoView({ block: "center" });
  await api("POST", `/api/v1/floor/find/${encodeURIComponent(reader)}`, { epc });
  S.finderReader = reader;
  S.finder = new EventSource(`/api/v1/floor/find/${encodeURIComponent(reader)}/live?lang=${S.lang}`);
  S.finder.onmessage = (ev) => {
    const d = JSON.parse(ev.data);
    fill.style.width = `${Math.round(100 * d.ratio)}%`; text.textContent = d.text;
    bar.setAttribute("aria-valuenow", String(Math.round(100 * d.ratio)));
  };
}

async function stopFinder() {
  if (S.finder) { S.finder.close(); S.finder = null; }
  const old = $("proximity"); if (old) old.remove();
  if (S.finderReader) {
    const reader = S.finderReader; S.finderReader = null;
    await api("POST", `/api/v1/floor/find/${encodeURIComponent(reader)}`, { epc: null });
  }
}

async function loadHolds() {
  const d = await api("GET", "/api/v1/floor/holds");
  const ul = $("hold-list"); ul.replaceChildren();
  if (!d.holds.length) ul.append(el("li", S.words.no_holds));
  for (const h of d.holds) {
    const li = el("li"); li.className = "hold";
    li.append(el("b", [h.name, h.size, h.colour].filter(Boolean).join(" · "), "title"),
              el("span", `${S.words.held_for.replace("{client}", h.client)} · ${h.since_text}${h.until_text ? " · " + h.until_text : ""}`),
              el("span", h.where_text, h.present ? "where" : "where missing"),
              el("small", h.epc));
    const rel = el("button", S.words.release, "release");
    rel.onclick = async () => {
      const r = await api("POST", `/api/v1/floor/holds/${encodeURIComponent(h.epc)}/release`);
      if (!r.accepted) { holdStatus(r.reason); return; }
      loadHolds().catch(() => {});
    };
    const acts = el("div", null, "actions"); acts.append(rel); li.append(acts);
    ul.append(li);
  }
}

function holdStatus(text) { const p = $("hold-status"); p.textContent = text || ""; p.hidden = !text; }

async function placeHold(ev) {
  ev.preventDefault(); holdStatus("");
  const epc = $("hold-epc").value.trim(); const client = $("hold-client").value.trim();
  if (!epc || !client) return;
  try {
    const r = await api("POST", "/api/v1/floor/holds", { epc, client });
    if (!r.accepted) { holdStatus(r.reason); return; }
    $("hold-epc").value = ""; $("hold-client").value = "";
  } catch (e) { holdStatus(e.message); return; }
  await loadHolds();
}

// The sales floor's one line: a held item arriving at reception or on the floor.
function followLine() {
  if (S.line) S.line.close();
  S.line = new EventSource(`/api/v1/floor/line/live?lang=${S.lang}`);
  S.line.onmessage = (ev) => { const d = JSON.parse(ev.data); floorLine(d.text); };
}

async function loadReplenish() {
  const d = await api("GET", "/api/v1/page/replenishment");
  const ul = $("replenish-list"); ul.replaceChildren();
  if (!d.lines.length) ul.append(el("li", S.words.none));
  for (const ln of d.lines) {
    const li = el("li", [ln.name || ln.sku, ln.size, ln.colour].filter(Boolean).join(" · "));
    li.append(el("small", ln.text, "words")); ul.append(li);
  }
  if (d.not_on_books) ul.append(el("li", d.not_on_books, "warn"));
}

async function loadAlerts() {
  const [open, d] = await Promise.all([api("GET", "/api/v1/floor/alerts"),
                                       api("GET", "/api/v1/page/alerts")]);
  const note = $("resolve-note"); note.textContent = open.resolve_note; note.hidden = !open.resolve_note;
  const list = $("open-alerts"); list.replaceChildren();
  if (!open.alerts.length) list.append(el("li", S.words.no_alerts));
  for (const a of open.alerts) {
    const li = el("li"); li.className = "alert"; li.dataset.alert = a.alert_id;
    li.append(el("b", `${a.type_text}${a.zone ? " — " + a.zone : ""}`, "title"),
              el("span", [a.name, a.size, a.colour].filter(Boolean).join(" · ")),
              el("span", a.state_text, "where"), el("small", a.epc));
    const err = el("p", null, "error"); err.hidden = true;
    const acts = el("div", null, "actions");
    const step = async (path, body) => {
      err.hidden = true;
      try { await api("POST", `/api/v1/alerts/${encodeURIComponent(a.alert_id)}/${path}`, body); }
      catch (e) { err.textContent = e.message; err.hidden = false; return; }
      loadAlerts().catch(() => {});
    };
    if (a.state === "open") {
      const ack = el("button", S.words.acknowledge, "acknowledge");
      ack.onclick = () => step("acknowledge", {}); acts.append(ack);
    }
    if (open.can_resolve) {
      const sel = el("select"); sel.className = "resolution";
      for (const c of open.resolutions) { const o = el("option", c.text); o.value = c.value; sel.append(o); }
      const res = el("button", S.words.resolve || "Resolve", "resolve");
      res.onclick = () => step("resolve", { resolution: sel.value });
      acts.append(sel, res);
    }
    li.append(acts, err); list.append(li);
  }
  const ul = $("alert-list"); ul.replaceChildren();
  if (!d.suspected.length) ul.append(el("li", S.words.none));
  for (const s of d.suspected) { const li = productLine(s); li.append(el("small", `${s.confidence_text} · ${s.since_text}`)); ul.append(li); }
}

async function loadCharts() {
  const q = `lang=${S.lang}&t=${Date.now()}`;
  $("chart-accuracy").src = `/api/v1/page/charts/accuracy.svg?${q}`;
  $("chart-shrinkage-zone").src = `/api/v1/page/charts/shrinkage.svg?by=zone&${q}`;
  $("chart-shrinkage-category").src = `/api/v1/page/charts/shrinkage.svg?by=category&${q}`;
}

function floorLine(text) { $("floor-line").textContent = text; }

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", async (ev) => {
    ev.preventDefault(); $("sign-in-error").hidden = true;
    try {
      const r = await api("POST", "/api/v1/session", { login: $("login").value, secret: $("pin").value });
      S.csrf = r.csrf; S.roles = r.user.roles || []; $("pin").value = ""; signedIn(true); await loadContext(); show("count");
    } catch (e) { $("pin").value = ""; $("sign-in-error").hidden = false; }
  });
  $("sign-out").onclick = async () => { stopLive(); await api("POST", "/api/v1/session/close").catch(() => {}); S.csrf = null; signedIn(false); };
  document.querySelectorAll(".langs button").forEach((btn) => btn.onclick = async () => {
    S.lang = btn.dataset.lang;
    if (S.csrf) {
      stopDesk(); await loadContext(); const cur = document.querySelector("nav button[aria-current]"); if (cur) show(cur.dataset.tab);
      // what Find already shows is in the former language: ask again
      if ($("find-q").value.trim() && $("find-results").childElementCount) await find({ preventDefault() {} }).catch(() => {});
    }
    else { const all = await fetch("/words.json").then((r) => r.json()); S.words = all[S.lang]; words(); }
  });
  $("floor-toggle").onclick = () => {
    const on = document.body.classList.toggle("floor"); $("floor-line").hidden = !on;
    if (on && !$("floor-line").textContent) floorLine(S.words.none);
  };
  document.querySelectorAll("nav button").forEach((btn) => btn.onclick = () => show(btn.dataset.tab));
  $("start-count").onclick = () => startCount().catch((e) => alert(e.message));
  $("close-count").onclick = () => closeCount().catch((e) => alert(e.message));
  $("close-reception").onclick = () => closeReception().catch((e) => alert(e.message));
  $("find-form").addEventListener("submit", (ev) => find(ev).catch((e) => alert(e.message)));
  $("hold-epc").addEventListener("input", () => { $("hold-epc").dataset.desk = ""; });
  $("hold-form").addEventListener("submit", (ev) => placeHold(ev).catch((e) => holdStatus(e.message)));
  start();
});

// The try-it page. Everything the server sends is shown as text (textContent), never as HTML.
"use strict";
const $ = (id) => document.getElementById(id);
const uid = () => (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random());
function say(el, text, error = false) { el.textContent = text; el.classList.toggle("error", error); }
function el(tag, props = {}, ...children) {
  const e = Object.assign(document.createElement(tag), props);
  for (const c of children) e.append(c);
  return e;
}

const demoKey = $("demo-key").content;
function apiKey() { return demoKey || sessionStorage.getItem("ragar-key") || ""; }

async function api(path, opts = {}) {
  const headers = { "content-type": "application/json", authorization: `Bearer ${apiKey()}` };
  const r = await fetch(path, { ...opts, headers });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const detail = typeof body.detail === "string" ? body.detail
      : Array.isArray(body.detail) ? body.detail.map(d => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ")
      : r.statusText;
    throw new Error(`${r.status}: ${detail}`);
  }
  return body;
}

function options(select, rows, value, label) {
  select.replaceChildren(...rows.map(r => el("option", { value: value(r), textContent: label(r) })));
}

async function fillPickers() {
  const [users, items] = await Promise.all([api("/v1/users?limit=30"), api("/v1/items?limit=200")]);
  for (const sel of [$("user"), $("rate-user")]) options(sel, users, u => u.user_id, u => `${u.user_id} (${u.events} events)`);
  for (const sel of [$("item"), $("rate-item")]) options(sel, items, i => i.item_id, i => `${i.item_id} (${i.category})`);
}

function fmt(x) { return x === null || x === undefined ? "n/a" : x.toFixed(3); }

let uploaded = null;  // {dataUrl, objectUrl, name}
$("upload").onchange = () => {
  const f = $("upload").files[0];
  if (!f) return;
  const reader = new FileReader();
  reader.onload = () => {
    uploaded = { dataUrl: reader.result, objectUrl: URL.createObjectURL(f), name: f.name };
    $("clear-upload").hidden = false;
    say($("status"), `reference: your photo ${f.name}`);
  };
  reader.onerror = () => say($("status"), `cannot read ${f.name}`, true);
  reader.readAsDataURL(f);
};
$("clear-upload").onclick = () => {
  uploaded = null; $("upload").value = ""; $("clear-upload").hidden = true;
  say($("status"), "reference: the catalog item");
};

async function sendFeedback(r, index, event, button) {
  try {
    const fb = await api("/v1/feedback", { method: "POST", body: JSON.stringify(
      { request_id: r.request_id, user_id: r.user_id, image_index: index, event, idempotency_key: uid() }) });
    button.disabled = true;
    say($("status"), `feedback stored: ${event} on image ${index} (id ${fb.feedback_id})`);
  } catch (e) { say($("status"), `feedback failed: ${e.message}`, true); }
}

function historyCard(h, wmax) {
  const bar = el("div", { className: "bar" });
  bar.style.width = `${(72 * h.weight / wmax).toFixed(0)}px`;
  return el("div", { className: "card" }, el("img", { src: h.image_url, alt: h.item_id }),
            el("div", { textContent: h.item_id }), el("div", { textContent: `w ${h.weight.toFixed(3)} · ${h.event_type}` }),
            bar);
}

function candidateCard(r, c) {
  const d = el("div", { className: "card candidate" + (c.index === r.chosen ? " chosen" : "") },
    el("img", { src: c.url, alt: `candidate ${c.index}` }), el("div", { textContent: `fit ${fmt(c.preference_fit)}` }),
    el("div", { textContent: `identity ${fmt(c.identity)}` }), el("div", { textContent: `score ${fmt(c.selection)}` }));
  for (const ev of ["click", "like", "skip"]) {
    const b = el("button", { textContent: ev, className: `fb-${ev}` });
    b.onclick = () => sendFeedback(r, c.index, ev, b);
    d.append(b);
  }
  return d;
}

async function generate() {
  say($("status"), "generating...");
  const body = { user_id: $("user").value };
  if (uploaded) body.reference_image = uploaded.dataUrl; else body.reference_item_id = $("item").value;
  if ($("n").value !== "") body.n = Number($("n").value);  // empty: the arm's own n
  if ($("seed").value !== "") body.seed = Number($("seed").value);  // empty: a random seed, returned
  try {
    const r = await api("/v1/generate", { method: "POST", body: JSON.stringify(body) });
    $("meta").textContent = `request ${r.request_id} · experiment ${r.experiment}, arm ${r.arm} · method ${r.method}` +
      ` · seed ${r.seed}` + (r.fallback ? ` · fallback: ${r.fallback}` : "") +
      ` · ${r.timings.total_s.toFixed(2)} s (batch of ${r.timings.batch_size})`;
    $("ref-img").src = uploaded ? uploaded.objectUrl : `/v1/items/${encodeURIComponent(r.reference_item_id)}/image`;
    $("ref-id").textContent = uploaded ? `your photo (${uploaded.name})` : r.reference_item_id;
    const wmax = Math.max(1e-9, ...r.history.map(h => h.weight));
    $("history").replaceChildren(...(r.history.length ? r.history.map(h => historyCard(h, wmax))
      : [el("em", { textContent: "no usable history: conditioned on the reference alone" })]));
    $("candidates").replaceChildren(...r.candidates.map(c => candidateCard(r, c)));
    $("result").hidden = false;
    say($("status"), `generated ${r.candidates.length} candidates`);
  } catch (e) { say($("status"), `generation failed: ${e.message}`, true); }
}

let pair = null;
async function newPair() {
  say($("rate-status"), "generating a pair...");
  try {
    pair = await api("/v1/compare", { method: "POST", body: JSON.stringify(
      { user_id: $("rate-user").value, reference_item_id: $("rate-item").value }) });
    $("rate-ref").src = `/v1/items/${encodeURIComponent($("rate-item").value)}/image`;
    $("img-a").src = pair.a.url;
    $("img-b").src = pair.b.url;
    document.querySelectorAll("#pair input").forEach(i => { i.checked = false; });
    $("pair").hidden = false;
    say($("rate-status"), "choose, then submit");
  } catch (e) { say($("rate-status"), `pair failed: ${e.message}`, true); }
}

async function submitJudgment() {
  const pref = document.querySelector("input[name=pref]:checked");
  const ident = document.querySelector("input[name=ident]:checked");
  if (!pair || !pref || !ident) { say($("rate-status"), "answer both questions first", true); return; }
  try {
    const r = await api("/v1/judgments", { method: "POST", body: JSON.stringify({
      request_a: pair.a.request_id, request_b: pair.b.request_id, preference_choice: pref.value,
      identity_choice: ident.value, idempotency_key: uid() }) });
    say($("rate-status"), `judgment stored (id ${r.judgment_id})`);
  } catch (e) { say($("rate-status"), `judgment failed: ${e.message}`, true); }
}

function show(tab) {
  $("try").hidden = tab !== "try"; $("rate").hidden = tab !== "rate";
  $("tab-try").classList.toggle("active", tab === "try"); $("tab-rate").classList.toggle("active", tab === "rate");
}

function start() {
  fillPickers().then(() => say($("status"), "ready"))
    .catch(e => say($("status"), `cannot load users and items: ${e.message}`, true));
}

$("tab-try").onclick = () => show("try");
$("tab-rate").onclick = () => show("rate");
$("generate").onclick = generate;
$("new-pair").onclick = newPair;
$("submit-judgment").onclick = submitJudgment;
$("save-key").onclick = () => { sessionStorage.setItem("ragar-key", $("api-key").value.trim()); start(); };
$("key-box").hidden = Boolean(demoKey);
if (apiKey()) start(); else say($("status"), "enter an API key to start (or run the server with --demo)");

// vram-ml's page: draws the form from GET /api/form (the Spec's own fields), keeps every input in
// the address bar, and asks the JSON API for the answer. No framework, no build step.
"use strict";

const GIB = 1024 ** 3;
const COLORS = ["#3b6fb6", "#7a9fd6", "#9b59b6", "#e67e22", "#f1c40f", "#27ae60", "#e74c3c",
                "#95a5a6", "#34495e", "#16a085", "#d35400"];
const DEFAULT_MODEL = "meta-llama/Meta-Llama-3-8B-Instruct";
const $ = (id) => document.getElementById(id);
const gib = (bytes) => (bytes == null ? "–" : (bytes / GIB).toFixed(2));

let form = null;          // GET /api/form
let mode = "form";        // form | yaml
const given = {};         // Spec field -> the input's text, for the fields the user set
let requestCounter = 0;
let lastSpec = null;      // the request body of the answer on screen (for simulate)
let updateTimer = null;
const multimodal = new Set();  // catalog ids (and aliases) of models with a vision tower
const pastedConfig = () => $("config-json").value.trim() !== "";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// ---- the form, from the Spec's fields ------------------------------------------------------
function inputFor(field) {
  const id = "f-" + field.name;
  if (field.name === "model") {
    return el("input", { id, type: "text", list: "catalog", placeholder: "search the catalog" });
  }
  if (field.kind === "choice") {
    const select = el("select", { id });
    for (const choice of field.choices) {
      const label = choice === null ? "none" : String(choice);
      const option = el("option", { value: JSON.stringify(choice), text: label });
      if (JSON.stringify(choice) === JSON.stringify(field.default)) option.selected = true;
      select.append(option);
    }
    return select;
  }
  if (field.kind === "boolean") {
    const input = el("input", { id, type: "checkbox" });
    input.checked = Boolean(field.default);
    return input;
  }
  if (field.kind === "integer" || field.kind === "number") {
    const attrs = { id, type: "number", step: field.kind === "integer" ? "1" : "any" };
    if (field.minimum != null) attrs.min = field.minimum;
    if (field.maximum != null) attrs.max = field.maximum;
    attrs.placeholder = field.default == null ? "" : String(field.default);
    return el("input", attrs);
  }
  const placeholder = field.kind === "mapping" ? "num_hidden_layers=4, hidden_size=1024"
    : Array.isArray(field.default) ? field.default.join(",") : String(field.default ?? "");
  return el("input", { id, type: "text", placeholder });
}

function drawForm() {
  const holder = $("fields");
  const groups = new Map(form.groups.map((name) => [name, el("fieldset", {}, el("legend", { text: name }))]));
  for (const field of form.fields) {
    const input = inputFor(field);
    input.dataset.field = field.name;
    const title = [field.help, field.default_source ? "default: " + field.default_source : ""]
      .filter(Boolean).join(" — ");
    const row = el("div", { class: "field", id: "row-" + field.name, title },
      el("label", { for: input.id, text: field.label }), input);
    groups.get(field.group).append(row);
    input.addEventListener(input.type === "checkbox" || input.tagName === "SELECT" ? "change" : "input",
      () => { given[field.name] = readInput(field); changed(); });
  }
  for (const fieldset of groups.values()) if (fieldset.children.length > 1) holder.append(fieldset);
}

function readInput(field) {
  const input = $("f-" + field.name);
  if (field.kind === "boolean") return String(input.checked);
  return input.value;
}

function writeInput(field, text) {
  const input = $("f-" + field.name);
  if (field.kind === "boolean") input.checked = text === "true";
  else if (field.kind === "choice") {
    const match = [...input.options].find((o) => o.value === text || JSON.parse(o.value) == text);
    if (match) input.value = match.value;
  } else input.value = text;
}

// The input's text as the JSON the API takes (the server validates, and names what is wrong).
function fieldValue(field, text) {
  if (field.kind === "choice") { try { return JSON.parse(text); } catch { return text; } }
  if (field.kind === "boolean") return text === "true";
  if (field.kind === "integer" || field.kind === "number") return text === "" ? undefined : Number(text);
  if (field.kind === "mapping") return parseMapping(text);
  if (text === "") return undefined;
  return text;
}

function parseMapping(text) {
  if (text.trim() === "") return undefined;
  const mapping = {};
  for (const pair of text.split(",")) {
    const [key, value] = pair.split("=");
    if (value === undefined || key.trim() === "" || isNaN(Number(value))) return text;
    mapping[key.trim()] = Number(value);
  }
  return mapping;
}

function dimIrrelevant() {
  const current = (name) => {
    const field = form.fields.find((f) => f.name === name);
    return given[name] !== undefined ? fieldValue(field, given[name]) : field.default;
  };
  for (const field of form.fields) {
    const when = field.relevant_when;
    let relevant = true;
    for (const [other, values] of Object.entries(when || {})) {
      const value = current(other);
      if (values.includes("multimodal")) relevant = relevant && (multimodal.has(value) || pastedConfig());
      else relevant = relevant && (values.includes("2+") ? Number(value) >= 2 : values.includes(value));
    }
    $("row-" + field.name).classList.toggle("dim", !relevant);
  }
}

// ---- the address bar holds every input ----------------------------------------------------
function writeUrl() {
  const params = new URLSearchParams();
  if (mode === "yaml") params.set("mode", "yaml");
  for (const field of form.fields) if (given[field.name] !== undefined) params.set(field.name, given[field.name]);
  if (mode === "yaml" && $("yaml").value) params.set("yaml", $("yaml").value);
  if ($("config-json").value) params.set("config_json", $("config-json").value);
  if ($("fit-card").value !== form.default_fit_card) params.set("card", $("fit-card").value);
  if ($("target-batch").value) params.set("target_batch", $("target-batch").value);
  history.replaceState(null, "", "?" + params.toString());
}

function readUrl() {
  const params = new URLSearchParams(location.search);
  for (const field of form.fields) {
    if (params.has(field.name)) { given[field.name] = params.get(field.name); writeInput(field, given[field.name]); }
  }
  if (params.get("mode") === "yaml") setMode("yaml", false);
  $("yaml").value = params.get("yaml") || "";
  $("config-json").value = params.get("config_json") || "";
  if ($("config-json").value) $("config-paste").open = true;
  if (params.has("card")) $("fit-card").value = params.get("card");
  if (params.has("target_batch")) $("target-batch").value = params.get("target_batch");
  if (mode === "form" && given.model === undefined && !$("config-json").value) {
    given.model = DEFAULT_MODEL;
    writeInput(form.fields.find((f) => f.name === "model"), DEFAULT_MODEL);
  }
}

function setMode(next, update = true) {
  mode = next;
  $("tab-form").setAttribute("aria-selected", String(mode === "form"));
  $("tab-yaml").setAttribute("aria-selected", String(mode === "yaml"));
  $("yaml-mode").hidden = mode !== "yaml";
  if (mode === "yaml" && $("yaml").value === "" && given.model === DEFAULT_MODEL) delete given.model;
  if (update) changed();
}

// ---- asking the API -----------------------------------------------------------------------
function specBody() {
  const spec = {};
  for (const field of form.fields) {
    if (given[field.name] === undefined) continue;
    const value = fieldValue(field, given[field.name]);
    if (value !== undefined) spec[field.name] = value;
  }
  const body = { spec };
  if (mode === "yaml") body.yaml = $("yaml").value;
  if ($("config-json").value.trim()) { body.config_json = $("config-json").value; delete spec.model; }
  return body;
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  });
  const payload = await response.json();
  if (!response.ok) throw new Error(payload.error || response.statusText);
  return payload;
}

function changed() {
  writeUrl();
  dimIrrelevant();
  clearTimeout(updateTimer);
  updateTimer = setTimeout(update, 150);
}

async function update() {
  const number = ++requestCounter;
  const body = specBody();
  const cards = form.cards.map((card) => card.key);
  const target = Number($("target-batch").value) || null;  // null: the run's own
  $("answer").classList.add("stale");
  try {
    const [prediction, fit, estimates] = await Promise.all([
      post("/api/predict", { ...body, cards }),
      post("/api/fit", { ...body, card: $("fit-card").value,
                         ...(target ? { target_batch: target } : {}) }),
      post("/api/estimate", body),
    ]);
    if (number !== requestCounter) return;
    lastSpec = body;
    $("error").hidden = true;
    drawPrediction(prediction);
    drawFit(fit);
    drawEstimates(estimates.estimates, null);
  } catch (error) {
    if (number !== requestCounter) return;
    $("error").textContent = "error: " + error.message;
    $("error").hidden = false;
  } finally {
    if (number === requestCounter) $("answer").classList.remove("stale");
  }
}

// ---- the answer ---------------------------------------------------------------------------
function drawPrediction(p) {
  $("peak").textContent = gib(p.peak_vram_bytes);
  $("upper").textContent = gib(p.upper_vram_bytes);
  $("answered-by").textContent = "answered by " + p.estimator + (p.fallback_reason ? " — " + p.fallback_reason : "");
  const s = p.spec;
  $("spec-line").textContent = `${s.model} · ${s.method}${s.quant_bits ? " " + s.quant_bits + "-bit" : ""}` +
    ` · batch ${s.batch_size} × seq ${s.seq_len} · ${s.precision} · ${s.attention} · ${s.optimizer}` +
    `${s.gradient_checkpointing ? " · checkpointing" : ""} · spec_id ${p.spec_id}`;
  drawBar(p.breakdown);
  drawAccounting(p);
  const rows = $("cards").tBodies[0];
  rows.replaceChildren();
  p.cards.forEach((verdict, index) => {
    const card = form.cards[index];
    const css = verdict.verdict === "fits" ? "fits" : verdict.verdict === "tight" ? "tight" : "no";
    rows.append(el("tr", {},
      el("td", { text: card.name }),
      el("td", { text: `${card.memory_total_mib} MiB (${card.memory_gib.toFixed(2)} GiB)` }),
      el("td", { class: css, text: verdict.verdict }),
      el("td", { text: gib(verdict.spare_bytes) + " GiB" }),
      el("td", { class: "src" }, card.source_url
        ? el("a", { href: card.source_url, text: card.source, rel: "noreferrer" }) : card.source)));
  });
}

function drawBar(breakdown) {
  const terms = form.breakdown_terms.filter((term) => breakdown[term] > 0);
  const total = terms.reduce((sum, term) => sum + breakdown[term], 0);
  $("bar").replaceChildren();
  $("legend").replaceChildren();
  terms.forEach((term) => {
    const color = COLORS[form.breakdown_terms.indexOf(term) % COLORS.length];
    const segment = el("div", { title: `${term}: ${gib(breakdown[term])} GiB`, "data-term": term });
    segment.style.width = (100 * breakdown[term] / total).toFixed(3) + "%";
    segment.style.background = color;
    $("bar").append(segment);
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = color;
    $("legend").append(el("li", {}, swatch, `${term} ${gib(breakdown[term])} GiB`));
  });
}

function drawAccounting(p) {
  const list = $("accounting-list");
  list.replaceChildren();
  const add = (name, value) => list.append(el("dt", { text: name }), el("dd", { text: value }));
  add("source", p.source);
  add("assumed", Object.entries(p.assumed).map(([k, v]) => `${k} (${v})`).join("; ") || "nothing");
  add("ignored", p.ignored.join(", ") || "nothing" + (p.ignored.length ? "" : ""));
  add("not modelled", p.unmodelled.join(", ") || "nothing");
  add("unknown keys", p.unknown.join(", ") || "none");
  for (const note of p.notes || []) add("note", note);
}

function drawFit(f) {
  const lines = [
    `${f.verdict}: ${f.bound_name} ${gib(f.bound_vram_bytes)} GiB on ${gib(f.gpu_memory_bytes)} GiB`,
    `largest batch size: ${f.max_batch_size ?? "none (not even 1)"} · largest cutoff: ${f.max_seq_len ?? "none"}`,
    `for an effective batch of ${f.target_effective_batch}: batch ${f.batch_size} × accumulation ${f.gradient_accumulation}` +
      ` (= ${f.effective_batch})`,
  ];
  for (const change of f.changes) lines.push(`→ ${change.description} (${change.cost}): ${gib(change.bound_vram_bytes)} GiB`);
  if (f.combination) lines.push(`→ together: ${f.combination.description}: ${gib(f.combination.bound_vram_bytes)} GiB`);
  if (!f.fits && !f.changes.length && !f.combination) lines.push("no change in the list makes it fit this card");
  $("fit").replaceChildren(...lines.map((line) => el("div", { text: line })));
}

let simulated = null;
function drawEstimates(estimates, simulation) {
  if (simulation !== undefined) simulated = simulation;
  const all = simulated ? [...estimates, simulated] : estimates;
  $("estimators").dataset.estimates = JSON.stringify(estimates);
  const asked = form.estimators.filter((name) => name !== "simulate");
  const label = (e, i) => (i < asked.length && e.estimator !== asked[i]
    ? `${asked[i]} (none bundled: ${e.estimator})` : e.estimator);
  $("estimators").tHead.replaceChildren(el("tr", {}, el("th", { text: "GiB" }),
    ...all.map((e, i) => el("th", { text: label(e, i) }))));
  const body = $("estimators").tBodies[0];
  body.replaceChildren();
  for (const term of form.breakdown_terms) {
    if (!all.some((e) => e.breakdown[term])) continue;
    body.append(el("tr", {}, el("td", { text: term }), ...all.map((e) => el("td", { text: gib(e.breakdown[term]) }))));
  }
  body.append(el("tr", {}, el("td", { text: "peak" }), ...all.map((e) => el("td", { text: gib(e.peak_vram_bytes) }))));
  body.append(el("tr", {}, el("td", { text: "upper bound" }), ...all.map((e) => el("td", { text: gib(e.upper_vram_bytes) }))));
}

async function simulate() {
  if (!lastSpec) return;
  $("simulate").disabled = true;
  $("sim-status").hidden = false;
  const estimates = JSON.parse($("estimators").dataset.estimates || "[]");
  try {
    let job = await post("/api/simulate", lastSpec);
    while (job.state === "running") {
      $("sim-progress").textContent = `${job.progress} (${job.elapsed_s} s)`;
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const response = await fetch("/api/simulate/" + job.job_id);
      job = await response.json();
      if (!response.ok) throw new Error(job.error);
    }
    if (job.state === "error") throw new Error(job.error);
    $("sim-progress").textContent = `simulated in ${job.elapsed_s} s`;
    drawEstimates(estimates, job.result);
  } catch (error) {
    $("sim-progress").textContent = "error: " + error.message;
  } finally {
    $("simulate").disabled = false;
    $("sim-status").querySelector("progress").hidden = true;
  }
}

async function start() {
  const [formResponse, catalogResponse] = await Promise.all([fetch("/api/form"), fetch("/api/catalog")]);
  form = await formResponse.json();
  const catalog = await catalogResponse.json();
  for (const row of catalog) if (row.multimodal) [row.hf_id, ...row.aliases].forEach((id) => multimodal.add(id));
  $("catalog").replaceChildren(...catalog.map((row) => el("option", {
    value: row.hf_id, text: `${row.family} · ${(row.total_params / 1e9).toFixed(1)}B${row.multimodal ? " · vision" : ""}` })));
  for (const card of form.cards) $("fit-card").append(el("option", { value: card.key, text: card.name }));
  $("fit-card").value = form.default_fit_card;
  drawForm();
  readUrl();
  $("tab-form").addEventListener("click", () => setMode("form"));
  $("tab-yaml").addEventListener("click", () => setMode("yaml"));
  for (const id of ["yaml", "config-json", "target-batch"]) $(id).addEventListener("input", changed);
  $("fit-card").addEventListener("change", changed);
  $("simulate").addEventListener("click", simulate);
  $("reset").addEventListener("click", () => { history.replaceState(null, "", "?"); location.reload(); });
  writeUrl();
  dimIrrelevant();
  await update();
  document.body.dataset.ready = "true";
}

document.addEventListener("DOMContentLoaded", start);

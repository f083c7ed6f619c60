// The study page: the trial table (server-side pages, sort, filters) and the study's plots,
// kept live by polling the study while it is queued or running.
import {
  ACTIVE, DIAGNOSIS_COLORS, PLOT_CONFIG, api, badge, baseLayout, el, errorText, fmtAge,
  countAxis, extent, fmtDuration, fmtNumber, initPage, loadPlotly, poll, setStatus, token,
} from "/static/common.js";

initPage();

const studyId = Number(window.location.pathname.split("/")[2]);
document.getElementById("report-link").href = `/studies/${studyId}/report`;
const LIMIT = 50;
const PARALLEL_MAX = 1000; // parallel coordinates: the best trials, at most this many (WebGL lines)
const TECHNIQUES = ["optimizer", "regularizer", "initializer"];
// On/off techniques join the grouping when the study searches them (each doubles the groups).
const SWITCHED_TECHNIQUES = ["batch_norm", "random_flip"];

function techniques() {
  return [...TECHNIQUES, ...SWITCHED_TECHNIQUES.filter((name) => summary.params[name] !== undefined)];
}
const table = { sort: "number", order: "asc", offset: 0, state: "", diagnosis: "", problem: "" };
let study = null;
let summary = null;
let lastSignature = "";
let lastImportances = 0;
let importancesFor = -1;

// The summary comes packed (repeated strings as indices into `labels`): unpacked once here.
function unpacked(packed) {
  const decode = (column, labels) => column.map((code) => (code === null ? null : labels[code]));
  packed.state = decode(packed.state, packed.labels.state);
  packed.diagnosis = decode(packed.diagnosis, packed.labels.diagnosis);
  for (const [name, column] of Object.entries(packed.params)) {
    const labels = packed.labels[`params.${name}`];
    if (labels) packed.params[name] = decode(column, labels);
  }
  return packed;
}

function mark(name) {
  if (performance.getEntriesByName(name).length === 0) performance.mark(name);
}

// --- header ----------------------------------------------------------------------------------

function renderStudy() {
  document.title = `hpsearch — ${study.name}`;
  document.getElementById("title").textContent = `Study ${study.id}: ${study.name}`;
  const counts = study.trial_counts;
  const finished = counts.complete + counts.pruned + counts.failed;
  const fact = (label, ...value) => el("div", {}, el("span", {}, label), ...value);
  document.getElementById("facts").replaceChildren(
    fact("status", badge(study.status), study.cancel_requested && study.status === "running" ? " stopping" : ""),
    fact("progress", `${finished}/${study.n_trials}`),
    fact("trials", Object.entries(counts).filter(([, n]) => n).map(([s, n]) => `${n} ${s}`).join(", ") || "none yet"),
    objectivesOf(study.spec).length > 1
      ? fact("objectives", objectivesOf(study.spec).map((o) => o.metric).join(", "))
      : fact("objective", `${study.direction} ${study.objective_metric}`),
    fact("best", fmtNumber(study.best_value ?? study.best_trial?.value ?? null), study.best_trial ? el("a", { href: trialHref(study.best_trial.number) }, ` (trial ${study.best_trial.number})`) : ""),
    study.confirmed_best ? confirmedFact(fact, study.confirmed_best) : "",
    fact("created", el("span", { title: study.created_at }, fmtAge(study.created_at))),
    study.error ? fact("error", study.error) : "",
  );
  document.getElementById("cancel").hidden = !(ACTIVE.has(study.status) && !study.cancel_requested);
}

// spec.confirm: the configuration with the best mean over its seeds, beside the luckiest draw
function confirmedFact(fact, confirmed) {
  const links = confirmed.trials.flatMap((number, index) => [
    index ? ", " : "",
    el("a", { href: trialHref(number) }, String(number)),
  ]);
  return fact(
    "confirmed best",
    `${fmtNumber(confirmed.mean)} ± ${fmtNumber(confirmed.stdev)} over ${confirmed.trials.length} seeds (trials `,
    ...links,
    ")",
    confirmed.diverged_left_out
      ? `; ${confirmed.diverged_left_out} configuration(s) that diverged on a seed left out`
      : "",
  );
}

function trialHref(number) {
  return `/studies/${studyId}/trials/${number}`;
}

async function cancel() {
  const result = document.getElementById("action-result");
  try {
    await api(`/studies/${studyId}/cancel`, { method: "POST" });
    result.textContent = "Cancel requested.";
  } catch (error) {
    result.textContent = `Cancel failed: ${errorText(error)}`;
  }
  await tick();
}

// --- the table ----------------------------------------------------------------------------

async function loadTable() {
  const query = new URLSearchParams({
    limit: LIMIT, offset: table.offset, sort: table.sort, order: table.order,
  });
  if (table.state) query.append("state", table.state);
  if (table.diagnosis) query.append("diagnosis", table.diagnosis);
  if (table.problem) query.append("problem", table.problem);
  const page = await api(`/studies/${studyId}/table?${query}`);
  const body = document.querySelector("#trials tbody");
  body.replaceChildren(
    ...page.items.map((trial) =>
      el(
        "tr",
        { "data-number": trial.number },
        el("td", { class: "num" }, el("a", { href: trialHref(trial.number) }, trial.number)),
        el("td", {}, badge(trial.state)),
        el("td", { class: "num" }, fmtNumber(trial.value)),
        el("td", {}, trial.diagnosis || "—"),
        el("td", { class: "problems-cell" }, (trial.problem_labels || []).map((label) => label.replaceAll("_", " ")).join(", ") || "—"),
        el("td", { class: "num" }, `${trial.epochs_run}${trial.stopped_early ? " (stopped early)" : ""}`),
        el("td", { class: "num" }, trial.best_epoch ?? "—"),
        el("td", { class: "num" }, fmtDuration(trial.duration_s)),
        el("td", {}, trial.device || "—"),
        el("td", { class: "params" }, Object.entries(trial.params).map(([k, v]) => `${k}=${fmtNumber(v, 3)}`).join("  ")),
      ),
    ),
  );
  if (page.items.length === 0) body.append(el("tr", {}, el("td", { colspan: 10 }, "No trials match.")));
  document.getElementById("page-info").textContent =
    page.total ? `${table.offset + 1}–${table.offset + page.items.length} of ${page.total}` : "";
  document.getElementById("prev").disabled = table.offset === 0;
  document.getElementById("next").disabled = table.offset + LIMIT >= page.total;
  for (const th of document.querySelectorAll("#trials th[data-sort]")) {
    th.classList.toggle("sorted-asc", th.dataset.sort === table.sort && table.order === "asc");
    th.classList.toggle("sorted-desc", th.dataset.sort === table.sort && table.order === "desc");
  }
  mark("hps:table");
}

async function loadDiagnoses() {
  const labels = await api(`/studies/${studyId}/diagnoses`);
  const select = document.getElementById("filter-diagnosis");
  const known = new Set([...select.options].map((option) => option.value));
  for (const label of labels) if (!known.has(label)) select.append(el("option", { value: label }, label));
}

function wireTable() {
  for (const th of document.querySelectorAll("#trials th[data-sort]")) {
    th.addEventListener("click", () => {
      const key = th.dataset.sort;
      table.order = table.sort === key && table.order === "asc" ? "desc" : "asc";
      table.sort = key;
      table.offset = 0;
      loadTable();
    });
  }
  for (const [id, key] of [["filter-state", "state"], ["filter-diagnosis", "diagnosis"], ["filter-problem", "problem"]]) {
    document.getElementById(id).addEventListener("change", (event) => {
      table[key] = event.target.value;
      table.offset = 0;
      loadTable();
    });
  }
  document.getElementById("prev").addEventListener("click", () => {
    table.offset = Math.max(0, table.offset - LIMIT);
    loadTable();
  });
  document.getElementById("next").addEventListener("click", () => {
    table.offset += LIMIT;
    loadTable();
  });
  document.getElementById("cancel").addEventListener("click", cancel);
}

// --- plots -----------------------------------------------------------------------------------

function empty(id, text) {
  const node = document.getElementById(id);
  if (window.Plotly && node.classList.contains("js-plotly-plot")) window.Plotly.purge(node);
  node.replaceChildren(el("div", { class: "empty" }, text));
}

function draw(Plotly, id, traces, layout) {
  const node = document.getElementById(id);
  if (!node.classList.contains("js-plotly-plot")) node.replaceChildren();
  return Plotly.react(node, traces, baseLayout(layout), PLOT_CONFIG);
}

function completeIndices() {
  const indices = [];
  summary.state.forEach((state, i) => {
    if (state === "complete" && summary.value[i] !== null) indices.push(i);
  });
  return indices;
}

async function plotHistory(Plotly) {
  const done = completeIndices();
  const others = [];
  summary.state.forEach((state, i) => {
    if (state !== "complete" && state !== "running" && state !== "waiting") others.push(i);
  });
  const pick = (indices, column) => indices.map((i) => summary[column][i]);
  await draw(
    Plotly,
    "plot-history",
    [
      {
        type: "scattergl", mode: "markers", name: "objective",
        x: pick(done, "number"), y: pick(done, "value"),
        marker: { size: 5, color: "#4c78a8", opacity: 0.7 },
      },
      {
        type: "scattergl", mode: "lines", name: "best so far", line: { color: "#e45756", width: 2, shape: "hv" },
        x: summary.number, y: summary.best_so_far,
      },
    ],
    {
      title: { text: `Optimization history (${done.length} complete, ${others.length} pruned or failed)` },
      xaxis: countAxis("trial", summary.number),
      yaxis: { title: { text: summary.objective_metric } },
    },
  );
  mark("hps:history");
}

function objectivesOf(spec) {
  const objective = spec && spec.objective;
  return Array.isArray(objective) ? objective : [objective || {}];
}

// A multi-objective study's trade-off: its first two objectives, the Pareto front (the
// server's: `/pareto`) over the best 200 complete trials by the first objective.
async function plotPareto(Plotly) {
  const node = document.getElementById("plot-pareto");
  const count = objectivesOf(study && study.spec).length;
  node.hidden = count < 2;
  if (count < 2) return;
  const [front, page] = await Promise.all([
    api(`/studies/${studyId}/pareto`),
    api(`/studies/${studyId}/trials?state=complete&sort=value&limit=200`),
  ]);
  if (front.trials.length === 0) return empty("plot-pareto", "Pareto front: no complete trial yet.");
  const [first, second] = front.objectives;
  const axis = (o) => ({ title: { text: `${o.metric} (${o.direction === "minimize" ? "lower" : "higher"} is better)` } });
  const onFront = new Set(front.trials.map((t) => t.number));
  const others = page.items.filter((t) => !onFront.has(t.number) && t.objective_values);
  const along = [...front.trials].sort((a, b) => a.objective_values[0] - b.objective_values[0]);
  const trace = (trials, extra) => ({
    type: "scatter", x: trials.map((t) => t.objective_values[0]), y: trials.map((t) => t.objective_values[1]),
    text: trials.map((t) => `trial ${t.number}`), hovertemplate: "%{text}<br>%{x:.4g}, %{y:.4g}<extra></extra>",
    ...extra,
  });
  const shown = count > 2 ? ` (its first two of ${count} objectives)` : "";
  await draw(Plotly, "plot-pareto", [
    trace(others, { mode: "markers", name: "dominated", marker: { size: 6, color: "#bbb" } }),
    trace(along, { mode: "lines+markers", name: "Pareto front", line: { color: "#e45756" }, marker: { size: 8, color: "#e45756" } }),
  ], {
    title: { text: `Pareto front: ${front.trials.length} of ${front.complete_trials} complete trials${shown}` },
    xaxis: axis(first),
    yaxis: axis(second),
  });
  mark("hps:pareto");
}

function plotParallel(Plotly) {
  let done = completeIndices();
  if (done.length === 0) return empty("plot-parallel", "Parallel coordinates: no complete trial yet.");
  const sign = summary.direction === "minimize" ? 1 : -1;
  done.sort((a, b) => sign * (summary.value[a] - summary.value[b]));
  const shown = done.length > PARALLEL_MAX ? done.slice(0, PARALLEL_MAX) : done;
  const dimensions = Object.entries(summary.params).map(([name, column]) => {
    const values = shown.map((i) => column[i]);
    const present = values.filter((v) => v !== null);
    if (present.length && present.every((v) => typeof v === "number")) {
      const [fill] = extent(present);
      return { label: name, values: values.map((v) => (v === null ? fill : v)) };
    }
    const labels = [...new Set(values.map((v) => String(v)))].sort();
    return {
      label: name,
      values: values.map((v) => labels.indexOf(String(v))),
      tickvals: labels.map((_, i) => i),
      ticktext: labels,
    };
  });
  const objective = shown.map((i) => summary.value[i]);
  dimensions.push({ label: summary.objective_metric, values: objective });
  const note = done.length > shown.length ? ` (best ${shown.length} of ${done.length})` : "";
  return draw(
    Plotly,
    "plot-parallel",
    [{
      type: "parcoords",
      line: { color: objective, colorscale: "Viridis", reversescale: summary.direction === "minimize", showscale: true },
      dimensions,
    }],
    { title: { text: `Parameters vs objective${note}` }, margin: { l: 70, r: 70, t: 80, b: 30 } },
  );
}

async function plotImportances(Plotly) {
  const completed = summary.trial_counts.complete;
  const live = ACTIVE.has(summary.status);
  if (completed === importancesFor) return;
  if (live && Date.now() - lastImportances < 20000 && importancesFor >= 0) return;
  lastImportances = Date.now();
  importancesFor = completed;
  // A public-read server keeps importances (costly to compute) behind the token: a reader
  // without one gets a note, not a token prompt.
  if (!token()) return empty("plot-importances", "Parameter importances need the API token.");
  const answer = await api(`/studies/${studyId}/importances`);
  if (answer.params.length === 0) return empty("plot-importances", `Parameter importances: ${answer.note}.`);
  await draw(
    Plotly,
    "plot-importances",
    [{
      type: "bar", orientation: "h", x: [...answer.importances].reverse(), y: [...answer.params].reverse(),
      marker: { color: "#4c78a8" }, hovertemplate: "%{y}: %{x:.3f}<extra></extra>",
    }],
    {
      title: { text: `Parameter importances (Optuna ${answer.evaluator}, ${answer.n_trials} trials)` },
      xaxis: { title: { text: "importance" }, range: [0, 1] },
      margin: { l: 110, r: 16, t: 36, b: 44 },
    },
  );
}

async function plotIntermediate(Plotly) {
  const data = await api(`/studies/${studyId}/intermediate?latest=300`);
  if (data.number.length === 0) return empty("plot-intermediate", "Intermediate values: no epoch recorded yet.");
  const colors = { complete: "#4c78a8", pruned: "#f58518", running: "#54a24b", failed: "#b279a2", waiting: "#999" };
  const seen = new Set();
  const traces = data.number.map((number, i) => {
    const state = data.state[i];
    const first = !seen.has(state);
    seen.add(state);
    return {
      type: "scatter", mode: "lines", x: data.epoch[i], y: data.value[i],
      name: state, legendgroup: state, showlegend: first,
      line: { color: colors[state] || "#999", width: state === "pruned" ? 1 : 1.5 },
      opacity: state === "pruned" ? 0.6 : 0.8,
      hovertemplate: `trial ${number} (${state})<br>epoch %{x}: %{y:.4f}<extra></extra>`,
    };
  });
  const note = data.total_trials > data.number.length ? `, latest ${data.number.length} of ${data.total_trials} trials` : "";
  await draw(Plotly, "plot-intermediate", traces, {
    title: { text: `Intermediate values per epoch${note}` },
    xaxis: countAxis("epoch", data.epoch.flat()),
    yaxis: { title: { text: data.metric } },
  });
}

function plotErrors(Plotly) {
  const groups = new Map();
  summary.number.forEach((number, i) => {
    const train = summary.train_error[i];
    const val = summary.val_error[i];
    if (train === null || val === null) return;
    const label = summary.diagnosis[i] || "none";
    if (!groups.has(label)) groups.set(label, { x: [], y: [], text: [] });
    const group = groups.get(label);
    group.x.push(train);
    group.y.push(val);
    group.text.push(`trial ${number}`);
  });
  if (groups.size === 0) return empty("plot-errors", "Train vs validation error: no finished trial yet.");
  const top = Math.max(extent([...groups.values()].flatMap((g) => [...g.x, ...g.y]))[1], 0.01) * 1.05;
  const traces = [...groups.entries()].map(([label, group]) => ({
    type: "scattergl", mode: "markers", name: label, x: group.x, y: group.y, text: group.text,
    marker: { size: 6, color: DIAGNOSIS_COLORS[label] || "#444", opacity: 0.75 },
    hovertemplate: "%{text}<br>train %{x:.3f}, validation %{y:.3f}<extra>" + label + "</extra>",
  }));
  traces.push({
    type: "scatter", mode: "lines", name: "train = validation", x: [0, top], y: [0, top],
    line: { color: "#aaa", dash: "dot", width: 1 }, hoverinfo: "skip",
  });
  return draw(Plotly, "plot-errors", traces, {
    title: { text: "Train vs validation error, by diagnosis" },
    xaxis: { title: { text: "train error" }, range: [0, top] },
    yaxis: { title: { text: "validation error" }, range: [0, top] },
  });
}

function techniqueOf(i, names) {
  const fixed = (study && study.spec && study.spec.fixed) || {};
  return names.map((name) => {
    const column = summary.params[name];
    const value = column && column[i] !== null && column[i] !== undefined ? column[i] : fixed[name];
    if (value === undefined || value === null) return "default";
    return typeof value === "boolean" ? `${name} ${value ? "on" : "off"}` : String(value);
  }).join(" × ");
}

function plotTechniques(Plotly) {
  const done = completeIndices();
  if (done.length === 0) return empty("plot-techniques", "Objective by technique: no complete trial yet.");
  const names = techniques();
  const groups = new Map();
  for (const i of done) {
    const key = techniqueOf(i, names);
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(summary.value[i]);
  }
  const sign = summary.direction === "minimize" ? 1 : -1;
  const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
  const ordered = [...groups.entries()].sort((a, b) => sign * (median(a[1]) - median(b[1])));
  const traces = ordered.map(([key, values]) => ({
    type: "box", name: key, y: values, boxpoints: values.length > 200 ? false : "all", jitter: 0.4,
    pointpos: 0, marker: { size: 4 }, line: { width: 1 },
  }));
  return draw(Plotly, "plot-techniques", traces, {
    title: { text: `Objective by ${names.join(" × ")}` },
    yaxis: { title: { text: summary.objective_metric } },
    xaxis: { automargin: true, tickangle: -30 },
    showlegend: false,
  });
}

// One plot at a time, each in its own task, so the page stays responsive in between.
async function plotAll(Plotly) {
  await plotHistory(Plotly);
  for (const plot of [plotPareto, plotErrors, plotTechniques, plotIntermediate, plotParallel, plotImportances]) {
    await new Promise((resolve) => setTimeout(resolve, 0));
    try {
      const started = performance.now();
      await plot(Plotly);
      performance.measure(`hps:${plot.name}`, { start: started });
    } catch (error) {
      console.warn(`${plot.name} failed`, error);
    }
  }
  mark("hps:plots");
}

// --- live updates ----------------------------------------------------------------------------

function signature(detail) {
  return JSON.stringify([detail.status, detail.trial_counts, detail.best_value, detail.cancel_requested]);
}

async function tick() {
  const detail = await api(`/studies/${studyId}`);
  const changed = signature(detail) !== lastSignature;
  study = detail;
  renderStudy();
  if (changed) {
    lastSignature = signature(detail);
    const [, next] = await Promise.all([loadTable(), api(`/studies/${studyId}/summary`), loadDiagnoses()]);
    summary = unpacked(next);
    await plotAll(await loadPlotly());
  } else if (ACTIVE.has(detail.status)) {
    await plotIntermediate(await loadPlotly()); // running trials add epochs between their ends
  }
  setStatus(ACTIVE.has(detail.status) ? `live · updated ${new Date().toLocaleTimeString()}` : `${detail.status}`);
  return ACTIVE.has(detail.status);
}

async function start() {
  wireTable();
  // plotly.min.js is preloaded (study.html) but run only once the table is drawn: running it
  // takes the main thread for a second or more on a slow machine.
  const tableDrawn = loadTable();
  const Plotly = tableDrawn.then(loadPlotly);
  const [detail, , first] = await Promise.all([
    api(`/studies/${studyId}`),
    tableDrawn,
    api(`/studies/${studyId}/summary`),
  ]);
  study = detail;
  summary = unpacked(first);
  lastSignature = signature(detail);
  renderStudy();
  await plotAll(await Plotly);
  loadDiagnoses();
  setStatus(ACTIVE.has(detail.status) ? `live · updated ${new Date().toLocaleTimeString()}` : detail.status);
  if (ACTIVE.has(detail.status)) poll(tick, 2500);
}

start().catch((error) => {
  document.getElementById("title").textContent = `Study ${studyId}: ${errorText(error)}`;
});

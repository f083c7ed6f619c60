// The trial page: parameters, metrics, learning curves with the best epoch and the
// early-stopping point marked, diagnosis, training problems with their evidence and hints,
// gradient norms per layer, retry history, checkpoint download.
import {
  PLOT_CONFIG, api, badge, baseLayout, countAxis, el, errorText, extent, fmtDuration, fmtNumber, fmtTime,
  initPage, loadPlotly, poll, setStatus,
} from "/static/common.js";

initPage();

const [, , studyId, , number] = window.location.pathname.split("/");
const base = `/studies/${studyId}/trials/${number}`;
let trial = null;

function flatten(object, prefix = "") {
  const rows = [];
  for (const [key, value] of Object.entries(object || {})) {
    if (value && typeof value === "object" && !Array.isArray(value)) rows.push(...flatten(value, `${prefix}${key}.`));
    else rows.push([`${prefix}${key}`, value]);
  }
  return rows;
}

function kv(id, object) {
  const rows = flatten(object);
  document.getElementById(id).replaceChildren(
    ...(rows.length ? rows : [["—", null]]).map(([key, value]) =>
      el("tr", {}, el("td", {}, key), el("td", {}, value === null ? "—" : fmtNumber(value, 5))),
    ),
  );
}

function render(study) {
  document.title = `hpsearch — study ${studyId} trial ${number}`;
  const back = document.getElementById("back");
  back.href = `/studies/${studyId}`;
  back.textContent = `‹ Study ${studyId}: ${study.name}`;
  document.getElementById("title").textContent = `Trial ${trial.number}`;
  const fact = (label, ...value) => el("div", {}, el("span", {}, label), ...value);
  document.getElementById("facts").replaceChildren(
    fact("state", badge(trial.state)),
    fact(study.objective_metric, fmtNumber(trial.value)),
    fact("diagnosis", trial.diagnosis || "—"),
    fact("epochs", `${trial.epochs_run}${trial.stopped_early ? " (stopped early)" : ""}`),
    fact("best epoch", trial.best_epoch ?? "—"),
    fact("device", trial.device || "—"),
    fact("duration", fmtDuration(trial.duration_s)),
    fact("started", fmtTime(trial.started_at)),
    fact("finished", fmtTime(trial.finished_at)),
    fact("worker", trial.worker_id ?? "—"),
  );
  document.getElementById("diagnosis-detail").textContent = trial.diagnosis_detail || "";
  const error = document.getElementById("error");
  error.hidden = !trial.error;
  error.textContent = trial.error || "";
  document.getElementById("checkpoint").hidden = !trial.has_checkpoint;
  kv("params", trial.params);
  kv("metrics", trial.metrics);
  const problems = trial.problems || [];
  document.getElementById("problems-box").hidden = problems.length === 0;
  document.getElementById("problems").replaceChildren(
    ...problems.map((p) => el("li", { "data-label": p.label },
      el("strong", {}, p.label.replaceAll("_", " ")), `: ${p.evidence}. `, el("em", {}, p.hint))),
  );
}

async function plotGradients(Plotly) {
  const node = document.getElementById("plot-gradients");
  const rows = trial.epochs.filter((e) => Array.isArray(e.kernel_grad_norms));
  if (rows.length === 0) {
    node.replaceChildren(el("div", { class: "empty" }, "No gradient norms recorded."));
    return;
  }
  if (!node.classList.contains("js-plotly-plot")) node.replaceChildren();
  const layers = extent(rows.map((e) => e.kernel_grad_norms.length))[1];
  const traces = [];
  for (let layer = 0; layer < layers; layer++) {
    traces.push({
      type: "scatter", mode: "lines+markers", marker: { size: 4 },
      name: layer === 0 ? "layer 1 (input)" : layer === layers - 1 ? `layer ${layer + 1} (output)` : `layer ${layer + 1}`,
      x: rows.map((e) => e.epoch),
      // a zero norm cannot sit on a log axis: drawn as a gap
      y: rows.map((e) => (e.kernel_grad_norms[layer] > 0 ? e.kernel_grad_norms[layer] : null)),
    });
  }
  await Plotly.react(
    node,
    traces,
    baseLayout({ title: { text: "Kernel gradient norm per layer (last step of each epoch)" }, xaxis: countAxis("epoch", rows.map((e) => e.epoch)), yaxis: { title: { text: "L2 norm" }, type: "log" }, margin: { l: 56, r: 16, t: 56, b: 44 } }),
    PLOT_CONFIG,
  );
}

async function renderRetries() {
  const items = [];
  if (trial.resumed_from_epoch !== null) items.push(el("li", {}, `resumed from epoch ${trial.resumed_from_epoch} of the trial it retries`));
  let ref = trial.retry_of;
  for (let hops = 0; ref && hops < 10; hops += 1) {
    const earlier = await api(`/studies/${studyId}/trials/${ref.number}`);
    items.push(el("li", {}, "retry of ", el("a", { href: `/studies/${studyId}/trials/${ref.number}` }, `trial ${ref.number}`), ` (${earlier.state}${earlier.error ? `: ${earlier.error.split("\n")[0]}` : ""})`));
    ref = earlier.retry_of;
  }
  if (items.length === 0) items.push(el("li", {}, "first attempt (no retry)"));
  document.getElementById("retries").replaceChildren(...items);
}

function markers() {
  const shapes = [];
  const annotations = [];
  const line = (x, color, text) => {
    shapes.push({ type: "line", x0: x, x1: x, yref: "paper", y0: 0, y1: 1, line: { color, dash: "dash", width: 1.5 } });
    annotations.push({ x, yref: "paper", y: 1, text, showarrow: false, xanchor: "left", yanchor: "bottom", font: { color, size: 11 } });
  };
  if (trial.best_epoch !== null) line(trial.best_epoch, "#2ca02c", `best epoch ${trial.best_epoch}`);
  if (trial.stopped_early) line(trial.epochs_run, "#d62728", `early stop ${trial.epochs_run}`);
  return { shapes, annotations };
}

async function plotCurves() {
  const Plotly = await loadPlotly();
  const epochs = trial.epochs.map((e) => e.epoch);
  const curve = (key, name, color, dash) => ({
    type: "scatter", mode: "lines+markers", name, x: epochs, y: trial.epochs.map((e) => e[key]),
    line: { color, dash }, marker: { size: 4 },
  });
  // Classification trials record accuracy per epoch, regression trials mean absolute error.
  const regression = trial.epochs.some((e) => e.accuracy == null && e.mae != null);
  const score = regression ? ["mae", "mean absolute error"] : ["accuracy", "accuracy"];
  for (const [id, key, label] of [["plot-loss", "loss", "loss"], ["plot-score", ...score]]) {
    const node = document.getElementById(id);
    if (epochs.length === 0) {
      node.replaceChildren(el("div", { class: "empty" }, `No ${label} recorded yet.`));
      continue;
    }
    if (!node.classList.contains("js-plotly-plot")) node.replaceChildren();
    const traces = [curve(key, `train ${label}`, "#4c78a8", "solid"), curve(`val_${key}`, `validation ${label}`, "#f58518", "dot")];
    // A regularized trial's loss includes its penalty: its data loss is drawn beside it.
    if (key === "loss" && trial.epochs.some((e) => e.data_loss != null && e.data_loss !== e.loss)) {
      traces.push(
        curve("data_loss", "train data loss (no penalty)", "#54a24b", "solid"),
        curve("val_data_loss", "validation data loss (no penalty)", "#e45756", "dot"),
      );
    }
    await Plotly.react(
      node,
      traces,
      baseLayout({ title: { text: `Learning curve: ${label}` }, xaxis: countAxis("epoch", epochs), yaxis: { title: { text: label } }, margin: { l: 56, r: 16, t: 56, b: 44 }, ...markers() }),
      PLOT_CONFIG,
    );
  }
  await plotGradients(Plotly);
  performance.mark("hps:curves");
}

async function download() {
  const result = document.getElementById("action-result");
  try {
    const response = await api(`${base}/checkpoint`, { raw: true });
    const blob = await response.blob();
    const name = /filename="?([^"]+)"?/.exec(response.headers.get("Content-Disposition") || "")?.[1] || `trial-${number}.ckpt`;
    const link = el("a", { href: URL.createObjectURL(blob), download: name });
    document.body.append(link);
    link.click();
    link.remove();
    result.textContent = `Downloaded ${name} (${(blob.size / 1024).toFixed(0)} KiB).`;
  } catch (error) {
    result.textContent = `Download failed: ${errorText(error)}`;
  }
}

async function refresh() {
  const [study, detail] = await Promise.all([api(`/studies/${studyId}`), api(base)]);
  trial = detail;
  render(study);
  await plotCurves();
  setStatus(trial.state === "running" ? `live · updated ${new Date().toLocaleTimeString()}` : trial.state);
  return trial.state === "running" || trial.state === "waiting";
}

document.getElementById("checkpoint").addEventListener("click", download);
refresh()
  .then((live) => {
    renderRetries();
    if (live) poll(refresh, 2500);
  })
  .catch((error) => {
    document.getElementById("title").textContent = `Trial ${number}: ${errorText(error)}`;
  });

// Studies side by side (GET /compare): best values and configurations, the technique each
// study's report found best, the sentences, and the curves of their best trials.
import {
  PLOT_CONFIG, api, badge, baseLayout, countAxis, el, errorText, fmtNumber, initPage, loadPlotly,
  setStatus,
} from "/static/common.js";

initPage();

// ?studies=3&studies=7 (as the API takes it) or ?studies=3,7
const ids = new URLSearchParams(window.location.search).getAll("studies")
  .flatMap((value) => value.split(",")).map((value) => value.trim()).filter(Boolean);

function datasetName(dataset) {
  if (dataset.name) return dataset.name;
  if (dataset.id !== undefined) return `upload ${dataset.id}`;
  return Object.keys(dataset).length ? JSON.stringify(dataset) : "the spec's default (digits)";
}

function row(label, cells) {
  return el("tr", {}, el("th", {}, label), ...cells.map((cell) => el("td", {}, cell)));
}

function union(objects) {
  return [...new Set(objects.flatMap((object) => Object.keys(object || {})))].sort();
}

function renderTable(comparison) {
  const studies = comparison.studies;
  document.querySelector("#compared thead").replaceChildren(
    el("tr", {}, el("th", {}, ""), ...studies.map((s) =>
      el("th", { "data-study": s.id }, el("a", { href: `/studies/${s.id}` }, `${s.id}: ${s.name}`)))),
  );
  const params = union(studies.map((s) => s.best_params));
  const metrics = union(studies.map((s) => s.best_test_metrics));
  const leaders = union(studies.map((s) => s.leaders));
  document.querySelector("#compared tbody").replaceChildren(
    row("status", studies.map((s) => badge(s.status))),
    row("objective", studies.map((s) => `${s.direction} ${s.objective_metric}`)),
    row("complete trials", studies.map((s) => String(s.n_complete))),
    row("best value", studies.map((s) => fmtNumber(s.best_value))),
    ...params.map((name) => row(`best ${name}`, studies.map((s) => fmtNumber(s.best_params?.[name] ?? null, 4)))),
    ...metrics.map((name) => row(name, studies.map((s) => fmtNumber(s.best_test_metrics[name] ?? null)))),
    ...leaders.map((name) => row(`best ${name} (report)`, studies.map((s) => s.leaders[name] || "not enough trials to tell"))),
  );
}

async function renderCurves(comparison) {
  const Plotly = await loadPlotly();
  const traces = comparison.studies.filter((s) => s.best_curve.length).map((s) => ({
    type: "scatter", mode: "lines+markers", name: `study ${s.id}: ${s.name}`,
    x: s.best_curve.map((p) => p.epoch), y: s.best_curve.map((p) => p.value),
  }));
  const node = document.getElementById("plot-curves");
  if (traces.length === 0) {
    node.replaceChildren(el("div", { class: "empty" }, "No study has a best trial yet."));
    return;
  }
  const metric = comparison.studies[0].objective_metric;
  await Plotly.react(node, traces, baseLayout({
    title: { text: "The best trial of each study, per epoch" },
    xaxis: countAxis("epoch", traces.flatMap((t) => t.x)), yaxis: { title: { text: metric } },
  }), PLOT_CONFIG);
}

async function render() {
  if (ids.length < 2) {
    setStatus("name two or more studies: /compare?studies=3&studies=7");
    return;
  }
  const query = new URLSearchParams(ids.map((id) => ["studies", id]));
  const comparison = await api(`/compare?${query}`);
  document.title = `hpsearch — compare ${ids.join(", ")}`;
  document.getElementById("title").textContent = `Studies ${ids.join(", ")} side by side`;
  document.getElementById("dataset").textContent = `dataset: ${datasetName(comparison.dataset)}`;
  document.getElementById("sentences").replaceChildren(...comparison.sentences.map((s) => el("li", {}, s)));
  renderTable(comparison);
  await renderCurves(comparison);
  performance.mark("hps:compare");
  setStatus(`${comparison.studies.length} studies`);
}

render().catch((error) => setStatus(`comparison failed: ${errorText(error)}`));

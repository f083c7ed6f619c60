// The technique report page: what GET /studies/{id}/report says, with a chart per technique
// (the objective's mean by choice or by thirds of a range) and the sentences under it.
import {
  PLOT_CONFIG, api, baseLayout, el, errorText, fmtNumber, initPage, loadPlotly, setStatus,
} from "/static/common.js";

initPage();

const studyId = Number(window.location.pathname.split("/")[2]);

function list(id, sentences) {
  document.getElementById(id).replaceChildren(...sentences.map((s) => el("li", {}, s)));
}

async function render() {
  const report = await api(`/studies/${studyId}/report`);
  document.title = `hpsearch — study ${studyId} report`;
  const back = document.getElementById("back");
  back.href = `/studies/${studyId}`;
  back.textContent = `‹ Study ${studyId}: ${report.name}`;
  document.getElementById("title").textContent = `Technique report: study ${studyId}`;
  list("summary", report.summary);
  document.getElementById("importance-note").textContent = report.importance_note || "";
  const best = report.best;
  document.getElementById("best-box").hidden = !best;
  if (best) {
    document.getElementById("best-line").textContent =
      `Trial ${best.number}: ${report.objective_metric} ${fmtNumber(best.value)}${best.diagnosis ? `, ${best.diagnosis}` : ""}`;
    const rows = [...Object.entries(best.params), ...Object.entries(best.test_metrics)];
    document.getElementById("best").replaceChildren(
      ...rows.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, fmtNumber(v, 5)))),
    );
  }
  const Plotly = await loadPlotly();
  const box = document.getElementById("techniques");
  box.replaceChildren();
  const ordered = [...report.techniques].sort((a, b) => (b.importance ?? -1) - (a.importance ?? -1));
  for (const [index, technique] of ordered.entries()) {
    const importance = technique.importance === null ? "n/a" : `${Math.round(100 * technique.importance)}%`;
    const plot = el("div", { class: "plot", id: `plot-technique-${index}` });
    const sentences = el("ul", { class: "sentences" }, ...technique.sentences.map((s) => el("li", {}, s)));
    box.append(el("div", { class: "technique", "data-parameter": technique.parameter },
      el("h3", {}, `${technique.parameter} (importance ${importance})`), plot, sentences));
    if (technique.groups.length === 0) {
      plot.replaceChildren(el("div", { class: "empty" }, "No complete trial searched it."));
      continue;
    }
    await Plotly.react(plot, [{
      type: "bar", x: technique.groups.map((g) => g.label), y: technique.groups.map((g) => g.mean),
      text: technique.groups.map((g) => `${g.n} trials`), marker: { color: "#4c78a8" },
      hovertemplate: "%{x}<br>mean %{y:.4g}<br>%{text}<extra></extra>",
    }], baseLayout({
      title: { text: `mean ${report.objective_metric} by group` },
      yaxis: { title: { text: report.objective_metric } }, margin: { l: 56, r: 16, t: 48, b: 64 },
    }), PLOT_CONFIG);
  }
  performance.mark("hps:report");
  setStatus(report.status);
}

render().catch((error) => setStatus(`report failed: ${errorText(error)}`));

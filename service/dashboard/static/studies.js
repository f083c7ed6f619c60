// The studies page: every study with its progress; submit a spec; cancel.
import {
  ACTIVE, api, badge, el, errorText, fmtAge, fmtNumber, initPage, poll, setStatus,
} from "/static/common.js";

const LIMIT = 50;
let offset = 0;
let total = 0;
const chosen = new Set(); // studies ticked for the comparison (kept across refreshes)

function choose(id, on) {
  if (on) chosen.add(id);
  else chosen.delete(id);
  document.getElementById("compare").disabled = chosen.size < 2;
}

initPage();

async function refresh() {
  const page = await api(`/dashboard/studies?limit=${LIMIT}&offset=${offset}`);
  total = page.total;
  const body = document.querySelector("#studies tbody");
  body.replaceChildren(
    ...page.items.map((study) => {
      const share = study.n_trials ? Math.min(1, study.finished_trials / study.n_trials) : 0;
      const cancellable = ACTIVE.has(study.status) && !study.cancel_requested;
      return el(
        "tr",
        { "data-study": study.id },
        el("td", {}, el("input", {
          type: "checkbox", class: "choose", "aria-label": `compare study ${study.id}`,
          checked: chosen.has(study.id), onchange: (event) => choose(study.id, event.target.checked),
        })),
        el("td", { class: "num" }, study.id),
        el("td", {}, el("a", { href: `/studies/${study.id}` }, study.name)),
        el("td", {}, badge(study.status), study.cancel_requested && study.status === "running" ? " stopping" : ""),
        el(
          "td",
          { class: "progress-cell" },
          el("span", { class: "progress" }, el("span", { style: `width:${(share * 100).toFixed(1)}%` })),
          `${study.finished_trials}/${study.n_trials}`,
        ),
        el("td", { class: "num" }, fmtNumber(study.best_value)),
        el("td", {}, `${study.direction} ${study.objective_metric}`),
        el("td", { title: study.created_at }, fmtAge(study.created_at)),
        el(
          "td",
          {},
          cancellable
            ? el("button", { type: "button", class: "danger cancel", onclick: () => cancel(study.id) }, "Cancel")
            : "",
        ),
      );
    }),
  );
  if (page.items.length === 0) {
    body.append(el("tr", {}, el("td", { colspan: 9 }, "No studies yet: submit one below.")));
  }
  document.getElementById("page-info").textContent =
    total ? `${offset + 1}–${offset + page.items.length} of ${total}` : "";
  document.getElementById("prev").disabled = offset === 0;
  document.getElementById("next").disabled = offset + LIMIT >= total;
  setStatus(`updated ${new Date().toLocaleTimeString()}`);
  return page.items.some((study) => ACTIVE.has(study.status));
}

async function cancel(id) {
  try {
    await api(`/studies/${id}/cancel`, { method: "POST" });
  } catch (error) {
    alertMessage(`Cancel failed: ${errorText(error)}`, true);
  }
  await refresh();
}

function alertMessage(text, isError = false) {
  const node = document.getElementById("submit-result");
  node.textContent = text;
  node.classList.toggle("error", isError);
}

async function loadExamples() {
  const select = document.getElementById("example");
  let examples = [];
  try {
    examples = await (await fetch("/static/examples.json")).json();
  } catch {
    return;
  }
  for (const example of examples) select.append(el("option", { value: example.name }, example.name));
  select.addEventListener("change", () => {
    const chosen = examples.find((example) => example.name === select.value);
    if (chosen) document.getElementById("spec").value = JSON.stringify(chosen.spec, null, 2);
  });
}

async function submit() {
  const text = document.getElementById("spec").value.trim();
  if (!text) return alertMessage("Paste a spec or pick an example first.", true);
  const button = document.getElementById("submit");
  button.disabled = true;
  try {
    let spec;
    try {
      spec = JSON.parse(text);
    } catch {
      spec = await api("/dashboard/parse-spec", { method: "POST", body: text, contentType: "text/plain" });
    }
    const study = await api("/studies", { method: "POST", body: spec });
    alertMessage("");
    document.getElementById("submit-result").append(
      "Queued ",
      el("a", { href: `/studies/${study.id}` }, `study ${study.id} '${study.name}'`),
      ` (${study.n_trials} trials).`,
    );
    offset = 0;
    await refresh();
  } catch (error) {
    alertMessage(`Refused: ${errorText(error)}`, true);
  } finally {
    button.disabled = false;
  }
}

document.getElementById("prev").addEventListener("click", () => {
  offset = Math.max(0, offset - LIMIT);
  refresh();
});
document.getElementById("next").addEventListener("click", () => {
  offset += LIMIT;
  refresh();
});
document.getElementById("submit").addEventListener("click", submit);
document.getElementById("compare").addEventListener("click", () => {
  const query = new URLSearchParams([...chosen].sort((a, b) => a - b).map((id) => ["studies", id]));
  window.location.href = `/compare?${query}`;
});

loadExamples();
refresh().then(() => poll(async () => (await refresh(), true), 3000));

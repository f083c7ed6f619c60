// Shared by the pages: the token, API calls, Plotly loading, small formatting helpers.

const TOKEN_KEY = "hpsearch-token";
const API = "/api/v1";

// A token in the URL (`?token=...`, as `hpsearch up` prints it) is kept and taken out of the
// address bar, so it is neither bookmarked nor shared by copying the URL.
export function adoptUrlToken() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (token) {
    localStorage.setItem(TOKEN_KEY, token.trim());
    url.searchParams.delete("token");
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  }
}

export function token() {
  return localStorage.getItem(TOKEN_KEY);
}

let asking = null;

// Ask for a token once: every call that got a 401 meanwhile waits for the same answer.
function askToken(message) {
  if (asking) return asking;
  const dialog = document.getElementById("token-dialog");
  const input = dialog.querySelector("input");
  dialog.querySelector(".token-message").textContent = message;
  input.value = "";
  asking = new Promise((resolve) => {
    dialog.querySelector("form").onsubmit = (event) => {
      event.preventDefault();
      const value = input.value.trim();
      if (!value) return;
      localStorage.setItem(TOKEN_KEY, value);
      dialog.close();
      asking = null;
      renderTokenState();
      resolve();
    };
  });
  dialog.showModal();
  input.focus();
  return asking;
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.detail = detail;
  }
}

// fetch under /api/v1 with the bearer token; a 401 asks for a token and tries again.
export async function api(path, { method = "GET", body, raw = false, contentType } = {}) {
  for (;;) {
    const headers = {};
    const current = token();
    if (current) headers.Authorization = `Bearer ${current}`;
    let payload = body;
    if (body !== undefined && !contentType) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    } else if (contentType) {
      headers["Content-Type"] = contentType;
    }
    const response = await fetch(API + path, { method, headers, body: payload });
    if (response.status === 401) {
      await askToken(
        current ? "The saved token was refused. Paste a valid API token." : "Paste the API token.",
      );
      continue;
    }
    if (!response.ok) {
      let detail = response.statusText;
      try {
        detail = (await response.json()).detail;
      } catch {
        /* not JSON */
      }
      throw new ApiError(response.status, detail);
    }
    return raw ? response : response.json();
  }
}

export function errorText(error) {
  if (error instanceof ApiError && Array.isArray(error.detail)) {
    return error.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("\n");
  }
  return error.message || String(error);
}

let plotly = null;

// plotly.min.js (4.8 MB, served from the installed `plotly` package) is loaded once, in
// parallel with the page's data, so tables never wait for it.
export function loadPlotly() {
  if (!plotly) {
    plotly = new Promise((resolve, reject) => {
      if (window.Plotly) return resolve(window.Plotly);
      const script = document.createElement("script");
      script.src = "/static/plotly.min.js";
      script.onload = () => {
        performance.mark("hps:plotly");
        resolve(window.Plotly);
      };
      script.onerror = () => reject(new Error("plotly.min.js did not load"));
      document.head.appendChild(script);
    });
  }
  return plotly;
}

export const PLOT_CONFIG = { displaylogo: false, responsive: true };

export function baseLayout(extra = {}) {
  return {
    margin: { l: 56, r: 16, t: 36, b: 44 },
    font: { family: "system-ui, sans-serif", size: 12 },
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "#fff",
    legend: { orientation: "h", y: -0.2 },
    ...extra,
  };
}

export const DIAGNOSIS_COLORS = {
  good_fit: "#2ca02c",
  overfitting: "#d62728",
  underfitting: "#1f77b4",
  underfitting_and_overfitting: "#9467bd",
  none: "#999999",
};

// --- small helpers ---------------------------------------------------------------------------

// An axis of counts (trials, epochs): Plotly would put ticks at 0.5 on a short range.
// [min, max] of numbers by a loop: Math.min(...values) overflows the call stack on long arrays
// (the errors plot of a 100,000-trial study has 200,000 values).
export function extent(values) {
  let low = Infinity;
  let high = -Infinity;
  for (const value of values) {
    if (value < low) low = value;
    if (value > high) high = value;
  }
  return [low, high];
}

export function countAxis(title, values) {
  const [low, high] = extent(values);
  const span = values.length ? high - low : 0;
  return { title: { text: title }, ...(span <= 10 ? { dtick: 1 } : {}) };
}

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function fmtNumber(value, digits = 4) {
  if (value === null || value === undefined) return "—";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return String(value);
  const magnitude = Math.abs(value);
  if (magnitude !== 0 && (magnitude < 1e-3 || magnitude >= 1e5)) return value.toExponential(2);
  return value.toPrecision(digits).replace(/\.?0+$/, "");
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

export function fmtAge(iso) {
  if (!iso) return "—";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.round(seconds)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

export function fmtTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

export function badge(text) {
  return el("span", { class: `badge badge-${text}` }, text);
}

export const ACTIVE = new Set(["queued", "running"]);

// Calls `tick` every `ms` while it returns true; paused while the tab is hidden.
export function poll(tick, ms) {
  let timer = null;
  const run = async () => {
    timer = null;
    if (document.hidden) return;
    let again = true;
    try {
      again = await tick();
    } catch (error) {
      console.warn("poll failed", error);
    }
    if (again !== false) timer = setTimeout(run, ms);
  };
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && timer === null) run();
  });
  timer = setTimeout(run, ms);
}

export function setStatus(text) {
  const node = document.getElementById("live");
  if (node) node.textContent = text;
}

function renderTokenState() {
  const button = document.getElementById("token-button");
  if (!button) return;
  button.textContent = token() ? "Token ✓" : "Token";
}

// The header's token button: change or forget the saved token.
export function initPage() {
  adoptUrlToken();
  renderTokenState();
  document.getElementById("token-button")?.addEventListener("click", async () => {
    await askToken("Paste the API token (kept in this browser's local storage).");
    window.location.reload();
  });
  document.getElementById("token-forget")?.addEventListener("click", () => {
    localStorage.removeItem(TOKEN_KEY);
    window.location.reload();
  });
}

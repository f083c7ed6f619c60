"""A study's technique report as one self-contained HTML file: its plots drawn by plotly.js,
which the file carries inline (from the `plotly` package), so it opens offline and sends no
request anywhere."""

from __future__ import annotations

import html
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 980px; color: #1d2330; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2rem; } h3 { margin-bottom: 0.2rem; }
table { border-collapse: collapse; }
td, th { border-bottom: 1px solid #e1e4ea; padding: 3px 10px; text-align: left; }
.muted { color: #6b7385; } .plot { height: 300px; }
"""


def report_html(report: dict[str, Any]) -> str:
    metric = html.escape(report["objective_metric"])
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>hpsearch report: study {report['study_id']}</title>",
        f"<style>{_STYLE}</style>",
        f"<script>{get_plotlyjs()}</script></head><body>",
        f"<h1>Study {report['study_id']}: {html.escape(report['name'])}</h1>",
        _list(report["summary"]),
    ]
    best = report.get("best")
    if best is not None:
        parts.append("<h2>Best configuration</h2>")
        parts.append(
            f"<p>Trial {best['number']}: {metric} {best['value']:.4g}"
            + (f", diagnosis {html.escape(best['diagnosis'])}" if best.get("diagnosis") else "")
            + "</p>"
        )
        rows = [*best["params"].items(), *best["test_metrics"].items()]
        parts.append(
            "<table>"
            + "".join(
                f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>"
                for k, v in rows
            )
            + "</table>"
        )
    confirmed = report.get("confirmed_best")
    if confirmed is not None:
        trials = ", ".join(str(n) for n in confirmed["trials"])
        parts.append("<h2>Confirmed best</h2>")
        parts.append(
            f"<p>Trials {trials}: mean {metric} {confirmed['mean']:.4g} "
            f"± {confirmed['stdev']:.2g} over {len(confirmed['trials'])} seeds "
            "(what the CI gate retrains)</p>"
        )
        parts.append(
            "<table>"
            + "".join(
                f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>"
                for k, v in confirmed["params"].items()
            )
            + "</table>"
        )
    parts.append("<h2>Techniques</h2>")
    if report.get("importance_note"):
        parts.append(f"<p class='muted'>{html.escape(report['importance_note'])}</p>")
    for index, technique in enumerate(report["techniques"]):
        importance = technique["importance"]
        shown = "n/a" if importance is None else f"{importance:.0%}"
        parts.append(f"<h3>{html.escape(technique['parameter'])} (importance {shown})</h3>")
        if technique["groups"]:
            parts.append(_figure(technique, metric, index))
        parts.append(_list(technique["sentences"]))
    parts.append("</body></html>")
    return "\n".join(parts)


def _figure(technique: dict[str, Any], metric: str, index: int) -> str:
    groups = technique["groups"]
    figure = go.Figure(
        go.Bar(
            x=[g["label"] for g in groups],
            y=[g["mean"] for g in groups],
            text=[f"{g['n']} trials" for g in groups],
            hovertemplate="%{x}<br>mean %{y:.4g}<br>%{text}<extra></extra>",
            marker_color="#4c78a8",
        )
    )
    figure.update_layout(
        title=f"mean {metric} by group",
        yaxis_title=metric,
        margin={"l": 60, "r": 20, "t": 40, "b": 60},
        height=300,
    )
    fragment: str = figure.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=f"plot-{index}",
        config={"displaylogo": False},
    )
    return fragment


def _list(sentences: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in sentences) + "</ul>"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)

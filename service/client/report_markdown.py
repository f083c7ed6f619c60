"""A study's technique report (`GET /studies/{id}/report`) as Markdown: for a terminal, a
pull request or `$GITHUB_STEP_SUMMARY`."""

from __future__ import annotations

from typing import Any


def report_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Study {report['study_id']}: {report['name']}", ""]
    lines += [f"- {sentence}" for sentence in report["summary"]]
    best = report.get("best")
    if best is not None:
        lines += ["", "## Best configuration", ""]
        lines.append(
            f"Trial {best['number']}: {report['objective_metric']} {best['value']:.4g}"
            + (f", diagnosis {best['diagnosis']}" if best.get("diagnosis") else "")
        )
        tests = ", ".join(f"{k} {v:.4g}" for k, v in sorted(best["test_metrics"].items()))
        if tests:
            lines.append(f"test: {tests}")
        lines += ["", "| parameter | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in best["params"].items()]
    confirmed = report.get("confirmed_best")
    if confirmed is not None:
        lines += ["", "## Confirmed best", ""]
        trials = ", ".join(str(n) for n in confirmed["trials"])
        lines.append(
            f"Trials {trials}: mean {report['objective_metric']} {confirmed['mean']:.4g} "
            f"± {confirmed['stdev']:.2g} over {len(confirmed['trials'])} seeds (what the CI "
            "gate retrains)"
        )
        lines += ["", "| parameter | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in confirmed["params"].items()]
    lines += ["", "## Techniques", ""]
    if report.get("importance_note"):
        lines += [f"_{report['importance_note']}_", ""]
    for technique in sorted(
        report["techniques"],
        key=lambda t: -(t["importance"] if t["importance"] is not None else -1),
    ):
        importance = technique["importance"]
        shown = "n/a" if importance is None else f"{importance:.0%}"
        lines += [f"### {technique['parameter']} (importance {shown})", ""]
        if technique["groups"]:
            lines += [f"| group | trials | mean {report['objective_metric']} | median |"]
            lines += ["|---|---|---|---|"]
            lines += [
                f"| {g['label']} | {g['n']} | {g['mean']:.4g} | {g['median']:.4g} |"
                for g in technique["groups"]
            ]
            lines.append("")
        lines += [f"- {sentence}" for sentence in technique["sentences"]]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"

"""The verdict as Markdown, for a CI job summary (`$GITHUB_STEP_SUMMARY`) or a PR comment."""

from __future__ import annotations

from service.gate.decision import Check, Verdict
from service.gate.measurement import Measurement

TITLE = "hpsearch regression gate"
_BADGES = {"pass": "✅ pass", "regression": "❌ regression", "error": "⚠️ error"}


def markdown_summary(
    verdict: Verdict,
    baseline: Measurement,
    candidate: Measurement,
    *,
    baseline_label: str,
    candidate_label: str,
) -> str:
    lines = [
        f"## {TITLE}: {_BADGES[verdict.outcome]}",
        "",
        f"Candidate {candidate_label} against baseline {baseline_label}; the best configuration "
        f"of each retrained with seeds {_seeds(candidate)} (candidate) and "
        f"{_seeds(baseline)} (baseline).",
        "",
        "| check | direction | baseline | candidate | worse by | spread | threshold | result |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    lines += [_row(check) for check in verdict.checks]
    if verdict.reported:
        lines += [
            "",
            "Other objectives of the study (reported, not gated):",
            "",
            "| objective | baseline | candidate |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| {r.metric} | {_number(r.baseline)} | {_number(r.candidate)} |"
            for r in verdict.reported
        ]
    tolerance = verdict.checks[0].tolerance if verdict.checks else 0.0
    lines += [
        "",
        f"Rule: a regression is a candidate worse than the baseline (means over the seeds) by "
        f"more than max(tolerance {tolerance:g}, spread); the spread is the larger of the two "
        "seed ranges (max − min).",
        "",
        ("⚠️ " if not verdict.fingerprint.matches else "") + verdict.fingerprint.message + ".",
    ]
    if verdict.package_changes:
        lines += ["", "| package | baseline | candidate |", "|---|---|---|"]
        lines += [
            f"| {name} | {old} | {new} |" for name, (old, new) in verdict.package_changes.items()
        ]
    lines += ["", "<details><summary>Values per seed</summary>", ""]
    for check in verdict.checks:
        lines += [f"**{check.name}**", "", "| side | seeds | values |", "|---|---|---|"]
        lines.append(f"| baseline | {_seeds(baseline)} | {_numbers(check.baseline_values)} |")
        lines.append(f"| candidate | {_seeds(candidate)} | {_numbers(check.candidate_values)} |")
        lines.append("")
    lines += ["</details>", ""]
    return "\n".join(lines)


def markdown_error(message: str) -> str:
    """The summary of a gate that could not compare (exit 2)."""
    return f"## {TITLE}: {_BADGES['error']}\n\nThe gate could not decide: {message}\n"


def _row(check: Check) -> str:
    result = "❌ regression" if check.regressed else "✅ pass"
    return (
        f"| {check.name} | {check.direction} | {check.baseline:.4g} | {check.candidate:.4g} | "
        f"{check.worse_by:+.4g} | {check.spread:.4g} | {check.threshold:.4g} | {result} |"
    )


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _seeds(measurement: Measurement) -> str:
    return ", ".join(str(seed) for seed in measurement.seeds)


def _numbers(values: tuple[float, ...]) -> str:
    return ", ".join(f"{value:.4g}" for value in values)

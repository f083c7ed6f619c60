"""What the gate writes: the baseline file (round trip, refusals), JUnit XML parsed back with
xml.etree, and the Markdown summary."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from service.gate import (
    GateError,
    Measurement,
    SeedRun,
    StudySource,
    judge,
    junit_error_xml,
    junit_xml,
    load_baseline,
    markdown_error,
    markdown_summary,
    package_versions,
    save_baseline,
)


def measurement(values: list[float], fingerprint: str = "c" * 64) -> Measurement:
    return Measurement(
        source=StudySource(study_id=7, study_name="digits-mlp", study_best_value=0.1),
        objective_metric="val_loss",
        direction="minimize",
        best_params={"learning_rate": 0.01},
        runs=[
            SeedRun(seed=i, objective_value=v, metrics={"test_accuracy": 0.9 - v / 10})
            for i, v in enumerate(values)
        ],
        packages={"torch": "2.13.0", "hpsearch": "0.1.0"},
        data_fingerprint=fingerprint,
    )


# --- the baseline file -----------------------------------------------------------------------


def test_a_baseline_file_round_trips(tmp_path: Path) -> None:
    original = measurement([0.25, 0.5, 0.75])
    path = tmp_path / "nested" / "baseline.json"
    save_baseline(original, path)
    loaded = load_baseline(path)
    assert loaded == original
    assert loaded.objective_value == 0.5
    assert loaded.metrics == {"test_accuracy": pytest.approx(0.85)}
    data = json.loads(path.read_text())
    assert (data["format"], data["version"]) == ("hpsearch-baseline", 1)
    assert [run["seed"] for run in data["runs"]] == [0, 1, 2]


def test_a_missing_baseline_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GateError, match=r"cannot read the baseline .*missing\.json"):
        load_baseline(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("not json", "is not an hpsearch baseline"),
        ('{"format": "hpsearch-baseline", "version": 2}', "version"),
        ('{"objective_metric": "val_loss", "direction": "sideways"}', "direction"),
    ],
)
def test_a_bad_baseline_file_says_what_is_wrong(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "baseline.json"
    path.write_text(content)
    with pytest.raises(GateError, match=problem):
        load_baseline(path)


def test_repeated_seeds_are_refused() -> None:
    with pytest.raises(ValueError, match="its own seed"):
        Measurement(
            objective_metric="val_loss",
            direction="minimize",
            runs=[SeedRun(seed=1, objective_value=0.1), SeedRun(seed=1, objective_value=0.2)],
            data_fingerprint="x",
        )


def test_package_versions_name_the_tracked_packages() -> None:
    versions = package_versions()
    assert set(versions) == {"torch", "lightning", "optuna", "hpsearch"}
    assert versions["optuna"][0].isdigit()


# --- JUnit XML -------------------------------------------------------------------------------


def parse(xml: str) -> ET.Element:
    return ET.fromstring(xml.encode())


def test_junit_of_a_regression() -> None:
    baseline, candidate = measurement([0.25, 0.25]), measurement([0.75, 0.75])
    verdict = judge(baseline, candidate, 0.125, metrics=["test_accuracy"])
    suite = parse(junit_xml(verdict, baseline, candidate, time_s=1.5))
    assert suite.tag == "testsuite"
    assert suite.get("name") == "hpsearch regress"
    # test_accuracy: 0.875 -> 0.825, within the tolerance
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "0")
    assert suite.get("time") == "1.500"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [
        "objective val_loss",
        "metric test_accuracy",
        "data fingerprint",
    ]
    failure = cases[0].find("failure")
    assert failure is not None
    assert failure.get("type") == "regression"
    assert "candidate 0.75 vs baseline 0.25" in (failure.get("message") or "")
    assert "max(tolerance 0.125, spread 0)" in (failure.get("message") or "")
    assert "candidate values: 0.75, 0.75" in (failure.text or "")
    assert cases[1].find("failure") is None
    assert cases[2].find("failure") is None
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["outcome"] == "regression"
    assert properties["tolerance"] == "0.125"
    assert properties["candidate.seeds"] == "0, 1"


def test_junit_of_a_pass_has_no_failure() -> None:
    baseline = measurement([0.5, 0.25])
    verdict = judge(baseline, baseline, 0.0)
    suite = parse(junit_xml(verdict, baseline, baseline))
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "0", "0")
    assert suite.find("testcase/failure") is None
    out = suite.find("testcase/system-out")
    assert out is not None
    assert "within the threshold" in (out.text or "")


def test_junit_of_a_data_mismatch_is_an_error_case() -> None:
    baseline, candidate = measurement([0.5], "a" * 64), measurement([0.5], "b" * 64)
    suite = parse(junit_xml(judge(baseline, candidate, 0.0), baseline, candidate))
    assert (suite.get("failures"), suite.get("errors")) == ("0", "1")
    error = suite.find("testcase[@name='data fingerprint']/error")
    assert error is not None
    assert error.get("type") == "data-mismatch"


def test_junit_of_a_gate_that_could_not_compare() -> None:
    suite = parse(junit_error_xml("study 9 does not exist on http://x"))
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("1", "0", "1")
    error = suite.find("testcase[@name='gate']/error")
    assert error is not None
    assert error.get("message") == "study 9 does not exist on http://x"


# --- Markdown --------------------------------------------------------------------------------


def test_the_summary_table_holds_the_numbers() -> None:
    baseline, candidate = measurement([0.25, 0.5]), measurement([1.0, 1.125])
    baseline = baseline.model_copy(update={"packages": {"torch": "2.12.0", "hpsearch": "0.1.0"}})
    verdict = judge(baseline, candidate, 0.0625)
    text = markdown_summary(
        verdict,
        baseline,
        candidate,
        baseline_label="`baseline.json`",
        candidate_label="study 8",
    )
    assert text.startswith("## hpsearch regression gate: ❌ regression")
    assert "Candidate study 8 against baseline `baseline.json`" in text
    row = next(line for line in text.splitlines() if line.startswith("| objective val_loss"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells == [
        "objective val_loss",
        "minimize",
        "0.375",
        "1.062",
        "+0.6875",
        "0.25",
        "0.25",
        "❌ regression",
    ]
    assert "| torch | 2.12.0 | 2.13.0 |" in text
    assert "| candidate | 0, 1 | 1, 1.125 |" in text
    assert "max(tolerance 0.0625, spread)" in text


def test_the_error_summary_says_why() -> None:
    text = markdown_error("cannot reach the server")
    assert "⚠️ error" in text
    assert "cannot reach the server" in text

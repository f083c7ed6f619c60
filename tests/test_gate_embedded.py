"""`hpsearch regress --spec` with no server named: the study runs on a temporary local stack
(SQLite, the API in a thread, a worker process), as a CI job runs it."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from service.cli import app
from service.gate import load_baseline, measure, save_baseline

SPEC: dict[str, Any] = {
    "name": "ci-candidate",
    "dataset": {"name": "digits"},
    "model": {"hidden_units": [16]},
    "search_space": {"learning_rate": {"type": "float", "low": 1e-3, "high": 0.05, "log": True}},
    "fixed": {"optimizer": "adam", "batch_size": 64},
    "sampler": {"name": "random", "seed": 1},
    "pruner": {"name": "none"},
    "budget": {"n_trials": 2, "max_epochs": 2},
}
DETAIL: dict[str, Any] = {
    "id": 1,
    "name": "old",
    "status": "completed",
    "spec": SPEC,
    "best_trial": {"number": 0, "params": {"learning_rate": 0.01}},
}


def regress(*args: str) -> Result:
    environment = {"HPS_URL": None, "HPS_API_TOKEN": None, "COLUMNS": "200"}
    return CliRunner().invoke(app, ["regress", *args, "--device", "cpu"], env=environment)


@pytest.mark.slow
def test_a_spec_runs_on_a_local_stack_and_passes(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    # A baseline measured on the same data, whose values any sane candidate beats.
    measured = measure(DETAIL, [0, 1], device="cpu")
    worse_runs = [run.model_copy(update={"objective_value": 10.0}) for run in measured.runs]
    baseline = tmp_path / "baseline.json"
    save_baseline(measured.model_copy(update={"runs": worse_runs}), baseline)

    report, candidate = tmp_path / "junit.xml", tmp_path / "candidate.json"
    result = regress(
        *("--spec", str(spec), "--baseline", str(baseline), "--seeds", "2"),
        *("--junit", str(report), "--save-candidate", str(candidate)),
    )
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "on a temporary local stack" in result.stdout
    assert "2/2 trials done" in result.stdout
    suite = ET.parse(report).getroot()
    assert (suite.get("failures"), suite.get("errors")) == ("0", "0")
    saved = load_baseline(candidate)
    assert saved.seeds == [0, 1]
    assert saved.source.study_name == "ci-candidate"
    assert saved.source.server is None
    assert saved.data_fingerprint == measured.data_fingerprint


def test_a_spec_the_server_refuses_is_an_error(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**SPEC, "budget": {"n_trials": 0}}))
    baseline = tmp_path / "baseline.json"
    save_baseline(measure(DETAIL, [0], device="cpu"), baseline)
    result = regress("--spec", str(spec), "--baseline", str(baseline))
    assert result.exit_code == 2
    assert "422: budget.n_trials" in result.stderr
    assert "Traceback" not in result.output


def test_an_unreadable_spec_is_an_error(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: [unclosed")
    baseline = tmp_path / "baseline.json"
    save_baseline(measure(DETAIL, [0], device="cpu"), baseline)
    result = regress("--spec", str(spec), "--baseline", str(baseline))
    assert result.exit_code == 2
    assert "is not valid JSON/YAML" in result.stderr

"""`hpsearch regress` and `hpsearch baseline save` through typer's CliRunner: a pass (exit 0), a
regression (exit 1) and errors (exit 2, one line on stderr), with the JUnit file parsed.

Studies live behind the real server (uvicorn on loopback) over SQLite and PostgreSQL; they are
seeded finished, with a known best trial, and the gate retrains their best configuration (a
tiny digits MLP: well under a second per seed).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from service.cli import app
from service.db.engine import transaction
from service.db.models import Study
from service.gate import Measurement, SeedRun, save_baseline
from tests.api_fixtures import TOKEN, free_port, seed_study, seed_trial

pytest_plugins = ["tests.api_fixtures"]


def tiny_spec(name: str, optimizer: str) -> dict[str, Any]:
    return {
        "name": name,
        "dataset": {"name": "digits"},
        "model": {"hidden_units": [16]},
        "search_space": {"learning_rate": {"type": "float", "low": 1e-4, "high": 0.1, "log": True}},
        "fixed": {"optimizer": optimizer, "batch_size": 64},
        "budget": {"n_trials": 2, "max_epochs": 3},
    }


def finished_study(
    db: sessionmaker[Session], name: str, optimizer: str, learning_rate: float, **study: Any
) -> int:
    """A completed study whose best trial used `learning_rate`."""
    values: dict[str, Any] = {"status": "completed", "n_trials": 1, **study}
    study_id = seed_study(db, name=name, spec=tiny_spec(name, optimizer), **values)
    trial_id = seed_trial(db, study_id, 0, params={"learning_rate": learning_rate}, value=0.5)
    with transaction(db) as session:
        row = session.get_one(Study, study_id)
        row.best_trial_id = trial_id
        row.best_value = 0.5
    return study_id


def hps(*args: str, url: str | None = None) -> Result:
    """`hpsearch ARGS` on the CPU, with the server (if any) named as CI names it: HPS_URL."""
    environment = {"HPS_URL": url, "HPS_API_TOKEN": TOKEN, "COLUMNS": "200"}
    return CliRunner().invoke(app, [*args, "--device", "cpu"], env=environment)


def error_line(result: Result) -> str:
    """Exit 2 with one line on stderr and no traceback."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def junit(path: Path) -> ET.Element:
    return ET.parse(path).getroot()


# --- with a server ---------------------------------------------------------------------------


def test_a_study_against_itself_passes(url: str, db: sessionmaker[Session], tmp_path: Path) -> None:
    study_id = finished_study(db, "adam", "adam", 0.01)
    summary = tmp_path / "summary.md"
    result = hps(
        "regress",
        *("--study", str(study_id), "--baseline-study", str(study_id), "--seeds", "1"),
        *("--summary", str(summary)),
        url=url,
    )
    assert result.exit_code == 0, result.output
    text = summary.read_text()
    assert text.startswith("## hpsearch regression gate: ✅ pass")
    assert f"Candidate study {study_id} 'adam' against baseline study {study_id} 'adam'" in text


@pytest.mark.slow
def test_a_baseline_of_the_same_study_passes_and_a_better_baseline_fails(
    url: str, db: sessionmaker[Session], tmp_path: Path
) -> None:
    study_id = finished_study(db, "adam", "adam", 0.01)
    baseline = tmp_path / "baseline.json"
    saved = hps("baseline", "save", str(study_id), "--out", str(baseline), url=url)
    assert saved.exit_code == 0, saved.output
    stored = json.loads(baseline.read_text())
    assert [run["seed"] for run in stored["runs"]] == [0, 1, 2]
    assert stored["best_params"] == {"learning_rate": 0.01}
    assert set(stored["packages"]) == {"torch", "lightning", "optuna", "hpsearch"}

    report, summary = tmp_path / "junit.xml", tmp_path / "summary.md"
    passed = hps(
        "regress",
        *("--study", str(study_id), "--baseline", str(baseline)),
        *("--junit", str(report), "--summary", str(summary)),
        url=url,
    )
    assert passed.exit_code == 0, passed.output
    assert "hpsearch regress: pass" in passed.stdout
    suite = junit(report)
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "0", "0")
    assert "✅ pass" in summary.read_text()

    # the same candidate against a baseline far better than anything it reaches: exit 1
    stored["runs"] = [{**run, "objective_value": 0.001} for run in stored["runs"]]
    baseline.write_text(json.dumps(stored))
    failed = hps(
        "regress",
        *("--study", str(study_id), "--baseline", str(baseline), "--junit", str(report)),
        url=url,
    )
    assert failed.exit_code == 1, failed.output
    assert "hpsearch regress: regression" in failed.stdout
    suite = junit(report)
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "1", "0")
    failure = suite.find("testcase[@name='objective val_data_loss']/failure")
    assert failure is not None
    assert "vs baseline 0.001 (minimize)" in (failure.get("message") or "")

    # the baseline trained on other data: the gate cannot decide (exit 2) unless told to
    stored["data_fingerprint"] = "0" * 64
    baseline.write_text(json.dumps(stored))
    args = ("regress", "--study", str(study_id), "--baseline", str(baseline))
    mismatch = hps(*args, "--junit", str(report), url=url)
    assert "trained on other data" in error_line(mismatch)
    assert junit(report).get("errors") == "1"
    assert hps(*args, "--allow-data-change", url=url).exit_code == 1


def test_a_worse_candidate_study_regresses(
    url: str, db: sessionmaker[Session], tmp_path: Path
) -> None:
    good = finished_study(db, "adam", "adam", 0.01)
    bad = finished_study(db, "slow-sgd", "sgd", 1e-4)
    report = tmp_path / "reports" / "junit.xml"
    result = hps(
        "regress",
        *("--baseline-study", str(good), "--study", str(bad)),
        *("--seeds", "2", "--tolerance", "0.05", "--metric", "test_accuracy"),
        *("--junit", str(report)),
        url=url,
    )
    assert result.exit_code == 1, result.output
    suite = junit(report)
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "2", "0")
    names = [case.get("name") for case in suite.findall("testcase")]
    assert names == ["objective val_data_loss", "metric test_accuracy", "data fingerprint"]
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["candidate.seeds"] == properties["baseline.seeds"] == "0, 1"


def test_an_unknown_study_is_an_error(url: str, tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.json"
    save_baseline(a_measurement(), baseline)
    result = hps("regress", "--study", "999", "--baseline", str(baseline), url=url)
    assert error_line(result) == f"hpsearch regress: error: study 999 does not exist on {url}"
    saved = hps("baseline", "save", "999", "--out", str(tmp_path / "b.json"), url=url)
    assert "study 999 does not exist" in error_line(saved)


def test_a_failed_study_is_an_error(url: str, db: sessionmaker[Session], tmp_path: Path) -> None:
    study_id = finished_study(db, "broken", "adam", 0.01, status="failed", error="out of memory")
    result = hps("baseline", "save", str(study_id), "--out", str(tmp_path / "b.json"), url=url)
    assert error_line(result).endswith(f"study {study_id} 'broken' failed: out of memory")


# --- no server needed ------------------------------------------------------------------------


def a_measurement() -> Measurement:
    return Measurement(
        objective_metric="val_loss",
        direction="minimize",
        runs=[SeedRun(seed=0, objective_value=0.5)],
        data_fingerprint="f" * 64,
    )


def test_a_missing_baseline_file_is_an_error(tmp_path: Path) -> None:
    report, summary = tmp_path / "junit.xml", tmp_path / "summary.md"
    result = hps(
        "regress",
        *("--study", "1", "--baseline", str(tmp_path / "nope.json")),
        *("--junit", str(report), "--summary", str(summary)),
    )
    assert "cannot read the baseline" in error_line(result)
    suite = junit(report)
    assert (suite.get("tests"), suite.get("errors")) == ("1", "1")
    error = suite.find("testcase[@name='gate']/error")
    assert error is not None
    assert "nope.json" in (error.get("message") or "")
    assert "could not decide" in summary.read_text()


def test_an_unreachable_server_is_an_error(tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.json"
    save_baseline(a_measurement(), baseline)
    closed = f"http://127.0.0.1:{free_port()}"
    result = hps("regress", "--study", "1", "--baseline", str(baseline), url=closed)
    assert "cannot reach the hpsearch server" in error_line(result)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--baseline", "b.json"], "exactly one of --study ID and --spec FILE"),
        (["--study", "1", "--spec", "s.json", "--baseline", "b.json"], "exactly one of --study"),
        (["--study", "1"], "exactly one of --baseline FILE and --baseline-study ID"),
    ],
)
def test_the_candidate_and_the_baseline_are_named_once(args: list[str], problem: str) -> None:
    assert problem in error_line(hps("regress", *args))


def test_a_bad_option_value_is_exit_2() -> None:
    result = hps("regress", "--study", "1", "--baseline", "b.json", "--seeds", "0")
    assert result.exit_code == 2
    assert "Traceback" not in result.output

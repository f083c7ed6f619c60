"""The client commands (`hpsearch submit/studies/show/trials/cancel/export`) through typer's
CliRunner against the real server (uvicorn on loopback), on SQLite and PostgreSQL.

Studies and trials are seeded in the database with known values, so what the commands print
can be checked against what is stored; `submit --wait` runs once with a real worker process.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from service.cli import app
from service.config import Settings
from service.db.engine import transaction
from service.db.models import Study, StudyStatus, TrialState
from tests.api_fixtures import TOKEN, free_port, seed_study, seed_trial, valid_spec

pytest_plugins = ["tests.api_fixtures"]

WORKER_FLAGS = ["--device", "cpu", "--threads", "1", "--poll", "0.2", "--exit-when-idle"]


def hps(url: str, *args: str, token: str = TOKEN) -> Result:
    """`hpsearch ARGS` with the server and token taken from the environment, as users set it
    (and a wide terminal, so that rich folds no table row)."""
    environment = {"HPS_URL": url, "HPS_API_TOKEN": token, "COLUMNS": "200"}
    return CliRunner().invoke(app, list(args), env=environment)


def one_line_error(result: Result) -> str:
    """The single line a failed command writes to stderr (and no traceback anywhere)."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def table_rows(output: str) -> list[list[str]]:
    """The cells of a rich table's body rows (rows that fold over lines give several)."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in output.splitlines()
        if line.startswith("│")
    ]


def count_studies(db: sessionmaker[Session]) -> int:
    with db() as session:
        return session.scalar(select(func.count()).select_from(Study)) or 0


def study_status(db: sessionmaker[Session], study_id: int) -> str:
    with db() as session:
        study = session.get(Study, study_id)
        assert study is not None
        return study.status


# --- submit ------------------------------------------------------------------------------------


def test_submit_prints_the_new_study_id(
    url: str, db: sessionmaker[Session], tmp_path: Path
) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(valid_spec(name="from-yaml")))

    result = hps(url, "submit", str(spec_file))

    assert result.exit_code == 0, result.output
    with db() as session:
        study = session.scalars(select(Study)).one()
    assert study.name == "from-yaml"
    assert study.status == StudyStatus.QUEUED
    assert f"study {study.id} 'from-yaml' queued: 10 trials" in result.stdout


def test_submit_warns_when_the_penalized_val_loss_judges_a_regularizer_search(
    url: str, db: sessionmaker[Session], tmp_path: Path
) -> None:
    space = {"regularizer": {"type": "categorical", "choices": ["l1", "l2"]}}
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(
        json.dumps(valid_spec(search_space=space, objective={"metric": "val_loss"}))
    )

    result = hps(url, "submit", str(spec_file))

    assert result.exit_code == 0, result.output
    with db() as session:
        assert session.scalars(select(Study)).one().status == StudyStatus.QUEUED
    output = " ".join(result.stdout.split())  # rich wraps long lines
    assert "warning: objective.metric 'val_loss' includes the regularization penalty" in output
    assert "'val_data_loss' is the same loss without the penalty" in output


def test_a_bad_spec_is_one_line_naming_its_json_path_and_stores_nothing(
    url: str, db: sessionmaker[Session], tmp_path: Path
) -> None:
    space = {
        "regularizer": {"type": "categorical", "choices": ["l2"]},
        "lambda": {"type": "float", "high": 0.1},
    }
    spec_file = tmp_path / "bad.json"
    spec_file.write_text(json.dumps(valid_spec(search_space=space)))

    line = one_line_error(hps(url, "submit", str(spec_file)))

    assert line.startswith("error: 422: search_space.lambda.low: ")
    assert "required" in line.lower()
    assert count_studies(db) == 0


def test_an_unreadable_spec_file_is_a_usage_error(tmp_path: Path) -> None:
    not_an_object = tmp_path / "list.yaml"
    not_an_object.write_text("- 1\n- 2\n")
    for path, says in ((tmp_path / "missing.yaml", "cannot read"), (not_an_object, "object")):
        result = hps("http://127.0.0.1:1", "submit", str(path))
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        assert says in result.stderr


# --- reading -----------------------------------------------------------------------------------


def test_studies_lists_what_is_stored_with_filter_and_paging(
    url: str, db: sessionmaker[Session]
) -> None:
    queued = seed_study(db, name="alpha")
    done = seed_study(db, name="beta", status=StudyStatus.COMPLETED.value, best_value=0.125)
    failed = seed_study(db, name="gamma", status=StudyStatus.FAILED.value)

    table = hps(url, "studies")
    assert table.exit_code == 0, table.output
    rows = table_rows(table.stdout)
    assert [row[0] for row in rows] == [str(failed), str(done), str(queued)]  # newest first
    assert rows[1][1:5] == ["beta", "completed", "10", "0.125"]
    assert "1-3 of 3 studies" in table.stdout

    completed = hps(url, "studies", "--status", "completed", "--json")
    assert completed.exit_code == 0, completed.output
    assert [s["id"] for s in json.loads(completed.stdout)["items"]] == [done]

    second = hps(url, "studies", "--limit", "1", "--offset", "1")
    assert [row[0] for row in table_rows(second.stdout)] == [str(done)]
    assert "2-2 of 3 studies; next page: --offset 2" in second.stdout

    bad_status = hps(url, "studies", "--status", "sleeping")
    assert bad_status.exit_code == 2


def test_show_prints_counts_best_trial_and_error(url: str, db: sessionmaker[Session]) -> None:
    study_id = seed_study(
        db, name="shown", status=StudyStatus.FAILED.value, error="worker lost: out of memory"
    )
    seed_trial(db, study_id, 0, value=0.75, params={"optimizer": "sgd", "learning_rate": 0.5})
    seed_trial(
        db,
        study_id,
        1,
        value=0.0625,
        params={"optimizer": "adam", "learning_rate": 0.003},
        metrics={"val_accuracy": 0.875},
    )
    seed_trial(db, study_id, 2, state=TrialState.PRUNED.value, value=None)
    seed_trial(db, study_id, 3, state=TrialState.FAILED.value, value=None)

    result = hps(url, "show", str(study_id))

    assert result.exit_code == 0, result.output
    text = result.stdout
    assert f"study {study_id} 'shown' failed" in text
    assert "4/10 finished" in text  # complete, pruned and failed trials are finished
    assert "complete 2, pruned 1, failed 1" in text
    assert "trial 1: val_loss 0.0625" in text
    assert "learning_rate=0.003" in text
    assert "optimizer=adam" in text
    assert "val_accuracy=0.875" in text
    assert "worker lost: out of memory" in text

    as_json = json.loads(hps(url, "show", str(study_id), "--json").stdout)
    assert as_json["best_trial"]["number"] == 1
    assert as_json["trial_counts"]["complete"] == 2


def test_show_and_trials_tell_the_confirmed_best_and_the_confirmations(
    url: str, db: sessionmaker[Session]
) -> None:
    confirming = valid_spec(confirm={"top": 1, "seeds": 2})
    study_id = seed_study(db, spec=confirming, n_trials=4)
    lucky, steady = {"optimizer": "sgd", "learning_rate": 0.5}, {"optimizer": "adam"}
    seed_trial(db, study_id, 0, value=0.25, params=steady)
    seed_trial(db, study_id, 1, value=0.125, params=lucky)
    seed_trial(db, study_id, 2, value=0.5, params=lucky, confirmation=True)
    seed_trial(db, study_id, 3, value=0.75, params=lucky, confirmation=True)
    seed_trial(  # the steady one blew up on a seed: not confirmed, and said so
        db, study_id, 4, value=None, params=steady, state="failed", problem_labels=",diverged,"
    )

    text = hps(url, "show", str(study_id)).stdout
    assert "trial 1: val_loss 0.125" in text  # the luckiest draw
    values = [0.125, 0.5, 0.75]
    mean, stdev = statistics.fmean(values), statistics.stdev(values)
    assert f"trials 1, 2, 3: mean val_loss {mean:.5g} ± {stdev:.5g} over 3 seeds" in text
    assert "new seeds   mean 0.625 over its confirmations alone" in text
    assert "left out    1 configuration(s) that diverged on one of their seeds" in text
    rows = [row for row in table_rows(hps(url, "trials", str(study_id)).stdout) if row[0]]
    assert [row[1] for row in rows] == ["complete"] * 2 + ["complete (confirms)"] * 2 + ["failed"]

    fresh = seed_study(db, spec=confirming, n_trials=4)
    waiting = hps(url, "show", str(fresh)).stdout
    assert "none yet: the last 2 trials retrain the 1 best configurations" in waiting


def test_trials_sorted_by_value_filtered_and_paged(url: str, db: sessionmaker[Session]) -> None:
    study_id = seed_study(db)
    values = {0: 0.5, 1: 0.125, 2: 0.75, 3: 0.25}
    for number, value in values.items():
        seed_trial(db, study_id, number, value=value)
    seed_trial(db, study_id, 4, state=TrialState.PRUNED.value, value=None)

    by_value = hps(url, "trials", str(study_id), "--sort", "value")
    assert by_value.exit_code == 0, by_value.output
    rows = [row for row in table_rows(by_value.stdout) if row[0]]  # skip folded lines
    assert [row[0] for row in rows] == ["1", "3", "0", "2", "4"]  # no value: last
    assert [row[2] for row in rows[:4]] == ["0.125", "0.25", "0.5", "0.75"]
    assert rows[4][1] == "pruned"

    desc = json.loads(
        hps(url, "trials", str(study_id), "--sort", "value", "--order", "desc", "--json").stdout
    )
    assert [t["value"] for t in desc["items"] if t["value"] is not None] == [
        0.75,
        0.5,
        0.25,
        0.125,
    ]

    pruned = json.loads(hps(url, "trials", str(study_id), "--state", "pruned", "--json").stdout)
    assert [t["number"] for t in pruned["items"]] == [4]

    page = hps(url, "trials", str(study_id), "--limit", "2", "--offset", "2")
    assert [row[0] for row in table_rows(page.stdout) if row[0]] == ["2", "3"]
    assert "3-4 of 5 trials; next page: --offset 4" in page.stdout

    assert hps(url, "trials", str(study_id), "--sort", "loss").exit_code == 2


def test_pareto_shows_the_trials_no_other_beats_on_every_objective(
    url: str, db: sessionmaker[Session]
) -> None:
    objectives = [
        {"metric": "val_data_loss"},
        {"metric": "val_accuracy"},  # maximized
    ]
    study_id = seed_study(db, spec=valid_spec(objective=objectives, pruner={"name": "none"}))
    points = {0: [0.5, 0.9], 1: [0.25, 0.8], 2: [0.75, 0.7], 3: [0.25, 0.85]}
    for number, values in points.items():
        seed_trial(db, study_id, number, value=values[0], objective_values=values)

    detail = hps(url, "show", str(study_id))
    assert (
        "val_data_loss, val_accuracy (best and gate: the first; trade-offs: hpsearch pareto "
        f"{study_id})" in detail.stdout
    )

    shown = hps(url, "pareto", str(study_id))
    assert shown.exit_code == 0, shown.output
    assert "val_data_loss ↓" in shown.stdout
    assert "val_accuracy ↑" in shown.stdout
    # 1 is beaten by 3 (as low a loss, a higher accuracy), 2 by 0; 0 and 3 trade off
    assert [row[0] for row in table_rows(shown.stdout) if row[0]] == ["0", "3"]
    assert "2 of 4 complete trials" in shown.stdout
    front = json.loads(hps(url, "pareto", str(study_id), "--json").stdout)
    assert [t["objective_values"] for t in front["trials"]] == [points[0], points[3]]


def test_cancel_changes_the_status_then_refuses_with_409(
    url: str, db: sessionmaker[Session]
) -> None:
    study_id = seed_study(db)

    result = hps(url, "cancel", str(study_id))

    assert result.exit_code == 0, result.output
    assert f"study {study_id} cancelled" in result.stdout
    assert study_status(db, study_id) == StudyStatus.CANCELLED
    again = one_line_error(hps(url, "cancel", str(study_id)))
    assert again.startswith("error: 409: ")
    assert "already cancelled" in again


def test_extend_queues_a_completed_study_for_more_trials_and_refuses_a_failed_one(
    url: str, db: sessionmaker[Session]
) -> None:
    done = seed_study(db, status="completed", n_trials=2)
    result = hps(url, "extend", str(done), "--trials", "3")
    assert result.exit_code == 0, result.output
    assert f"study {done} extended by 3: 3 trials, queued" in result.stdout  # 0 trials ran + 3
    assert study_status(db, done) == StudyStatus.QUEUED
    failed = seed_study(db, status="failed")
    line = one_line_error(hps(url, "extend", str(failed), "--trials", "1"))
    assert line.startswith("error: 409: ")
    assert "only a queued, running or completed study can be extended" in line


def test_export_csv_to_stdout_and_json_to_a_file(
    url: str, db: sessionmaker[Session], tmp_path: Path
) -> None:
    study_id = seed_study(db)
    seed_trial(db, study_id, 0, value=0.5, params={"optimizer": "sgd", "learning_rate": 0.25})
    seed_trial(db, study_id, 1, value=0.125, params={"optimizer": "adam", "learning_rate": 0.01})

    as_csv = hps(url, "export", str(study_id))
    assert as_csv.exit_code == 0, as_csv.output
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(r["number"], r["value"], r["param_optimizer"]) for r in rows] == [
        ("0", "0.5", "sgd"),
        ("1", "0.125", "adam"),
    ]

    out = tmp_path / "trials.json"
    as_json = hps(url, "export", str(study_id), "--format", "json", "--out", str(out))
    assert as_json.exit_code == 0, as_json.output
    records = json.loads(out.read_text())
    assert [(r["number"], r["value"], r["param_learning_rate"]) for r in records] == [
        (0, 0.5, 0.25),
        (1, 0.125, 0.01),
    ]


# --- failures: one line, exit 1 ----------------------------------------------------------------


def test_an_unreachable_server_is_one_line() -> None:
    line = one_line_error(hps(f"http://127.0.0.1:{free_port()}", "studies"))
    assert "cannot reach the hpsearch server" in line


def test_a_refused_token_is_one_line_naming_the_token(url: str) -> None:
    flags = ["--url", url, "--token", "not-the-token"]
    line = one_line_error(hps("http://127.0.0.1:1", "show", "1", *flags, token=TOKEN))
    assert "refused the token" in line
    assert "HPS_API_TOKEN" in line


def test_an_unknown_study_is_one_line_404(url: str) -> None:
    for command in (["show", "424242"], ["trials", "424242"], ["export", "424242"]):
        line = one_line_error(hps(url, *command))
        assert line == "error: 404: no study has id 424242"


# --- submit --wait -----------------------------------------------------------------------------


def in_background(action: Callable[[], Any]) -> Callable[[], None]:
    """Run `action` in a thread; the returned function joins it and re-raises its error."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as error:  # handed to the test thread
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def join() -> None:
        thread.join(timeout=300)
        assert not thread.is_alive()
        if errors:
            raise errors[0]

    return join


def first_study_id(db: sessionmaker[Session], timeout_s: float = 30) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with db() as session:
            found = session.scalars(select(Study.id)).first()
        if found is not None:
            return found
        time.sleep(0.05)
    raise AssertionError("no study was submitted")


def test_submit_wait_exits_non_zero_when_the_study_fails(
    url: str, db: sessionmaker[Session], tmp_path: Path
) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(valid_spec()))

    def fail_it() -> None:  # what a worker records when a study cannot go on
        study_id = first_study_id(db)
        with transaction(db) as session:
            study = session.get(Study, study_id)
            assert study is not None
            study.status = StudyStatus.FAILED.value
            study.error = "every trial failed"

    join = in_background(fail_it)
    result = hps(url, "submit", str(spec_file), "--wait", "--poll", "0.1")
    join()

    line = one_line_error(result)
    assert line.endswith("ended failed: every trial failed")
    assert "failed — best 0 trials" in result.stdout  # the (empty) leaderboard


@pytest.mark.slow
def test_submit_wait_follows_a_worker_to_the_leaderboard(
    url: str, server_settings: Settings, db: sessionmaker[Session], tmp_path: Path
) -> None:
    spec = {
        "name": "tiny",
        "dataset": {"name": "synthetic", "n_samples": 300, "n_features": 8, "n_classes": 3},
        "model": {"hidden_units": [16]},
        "search_space": {"learning_rate": {"type": "float", "low": 1e-3, "high": 0.1, "log": True}},
        "sampler": {"name": "random", "seed": 1},
        "budget": {"n_trials": 3, "max_epochs": 2},
        "confirm": {"top": 1, "seeds": 1},  # trial 2 retrains the better of trials 0 and 1
    }
    spec_file = tmp_path / "tiny.json"
    spec_file.write_text(json.dumps(spec))
    worker_runs: list[subprocess.CompletedProcess[bytes]] = []

    def work() -> None:
        first_study_id(db)
        worker_runs.append(
            subprocess.run(
                [sys.executable, "-m", "service.worker", *WORKER_FLAGS],
                env={
                    **os.environ,
                    "HPS_DATABASE_URL": server_settings.effective_database_url,
                    "HPS_DATA_DIR": str(server_settings.data_dir),
                },
                capture_output=True,
                timeout=300,
            )
        )

    join = in_background(work)
    result = hps(url, "submit", str(spec_file), "--wait", "--poll", "0.2")
    join()

    assert worker_runs[0].returncode == 0, worker_runs[0].stderr.decode()[-3000:]
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "completed — best" in result.stdout
    board = [row for row in table_rows(result.stdout) if row[0]]
    assert 1 <= len(board) <= 3
    with db() as session:
        study = session.scalars(select(Study)).one()
        assert study.status == StudyStatus.COMPLETED
        assert float(board[0][1]) == pytest.approx(study.best_value, abs=1e-4)
    confirmed = re.search(r"confirmed best \(trials ([01]), 2\): mean val_data_loss", result.stdout)
    assert confirmed is not None, result.stdout


def test_shell_completion_offers_the_commands_and_their_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # --show-completion finds the shell among the parent processes (shellingham); a test run
    # started in the background (no shell above it) would find none.
    import shellingham  # type: ignore[import-untyped]

    monkeypatch.setattr(shellingham, "detect_shell", lambda: ("bash", "/bin/bash"))

    def complete(words: str) -> list[str]:
        environment = {
            "_HPSEARCH_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split(" ")) - 1),
        }
        result = CliRunner().invoke(app, [], prog_name="hpsearch", env=environment)
        assert result.exit_code == 0, result.output
        return result.stdout.split()

    assert complete("hpsearch tri") == ["trials"]
    assert complete("hpsearch trials 1 --sort ") == ["number", "value"]
    assert complete("hpsearch export 1 --format ") == ["csv", "json"]
    assert (
        "_hpsearch_completion"
        in CliRunner().invoke(app, ["--show-completion", "bash"], prog_name="hpsearch").stdout
    )


def test_tokens_are_issued_listed_and_revoked_from_the_cli(url: str) -> None:
    created = hps(url, "token", "create", "ci-bot", "--scope", "read", "--max-priority", "3")
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip()
    assert secret.startswith("hps_")
    assert "not shown again" in created.stderr
    assert hps(url, "studies", token=secret).exit_code == 0  # a read token reads
    listed = hps(url, "token", "list")
    assert listed.exit_code == 0, listed.output
    assert "ci-bot" in listed.stdout
    assert secret not in listed.stdout
    revoked = hps(url, "token", "revoke", "ci-bot")
    assert revoked.exit_code == 0, revoked.output
    assert "token 'ci-bot' revoked" in revoked.stdout
    refused = one_line_error(hps(url, "token", "list", token=secret))
    assert refused.startswith("error: 40")  # revoked (401) or, cached a moment, not admin (403)

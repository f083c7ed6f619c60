"""The confirmation stage: a study's last trials retrain its best configurations with new seeds,
and the study reports the configuration with the best mean (issue 14; bench/README.md
"Configurations, not draws"). The claim's choice on every queue: test_work_queue_contract.py."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import pytest
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.client.report_html import report_html
from service.client.report_markdown import report_markdown
from service.db.models import Study, StudyStatus, Trial, TrialState
from service.queue.confirmation import (
    ConfirmPlan,
    Draw,
    confirmation_choice,
    next_confirmation,
    top_configurations,
)
from service.queue.memory import InMemoryWorkQueue
from service.studies import extend_study, get_study
from service.studies.analysis import get_param_importances
from service.studies.confirmed import confirmed_best
from service.studies.spec import StudySpec
from tests.api_fixtures import TestClient, seed_study, seed_trial, valid_spec
from tests.test_worker import add_study, run_worker_until_idle, sessions, settings_for, spec
from tests.test_worker_loop import FakeTrainer, learning_rate, make_loop, queued
from tests.test_worker_loop import spec as loop_spec

pytest_plugins = ["tests.api_fixtures"]
__all__ = ["sessions"]

A, B, C = ({"learning_rate": rate} for rate in (0.01, 0.02, 0.03))


def done(params: dict[str, Any], value: float, confirmation: bool = False) -> Draw:
    return Draw(params, TrialState.COMPLETE, value, confirmation)


# --- which configuration a confirmation retrains ------------------------------------------


def test_the_top_configurations_are_the_best_distinct_searched_draws() -> None:
    draws = [
        done(A, 0.5),
        done(B, 0.2),
        done(B, 0.3),  # B again: one configuration
        Draw(C, TrialState.PRUNED, 0.1, False),  # a pruned trial's value is not final
        done(C, 0.05, confirmation=True),  # a confirmation's luck promotes nothing
        done({"learning_rate": 0.04}, float("nan")),
    ]
    assert top_configurations(draws, 2, "minimize") == [B, A]
    assert top_configurations(draws, 5, "maximize") == [A, B]


def test_each_configuration_gets_a_seed_before_any_gets_a_second() -> None:
    searched = [done(A, 0.5), done(B, 0.2), done(C, 0.4)]
    assert next_confirmation(searched, 2, "minimize") == B
    running = Draw(B, TrialState.RUNNING, None, True)
    assert next_confirmation([*searched, running], 2, "minimize") == C
    failed_with_retry = Draw(C, TrialState.FAILED, None, True, retried=True)
    waiting_retry = Draw(C, TrialState.WAITING, None, True)
    after = [*searched, running, failed_with_retry, waiting_retry]
    assert next_confirmation(after, 2, "minimize") == B  # the retry holds C's one seed
    assert next_confirmation([*after, Draw(B, TrialState.FAILED, None, True)], 2, "minimize") == C


def test_no_confirmation_before_a_trial_has_finished() -> None:
    assert next_confirmation([Draw(A, TrialState.PRUNED, 0.1, False)], 3, "minimize") is None


def test_a_confirmation_waits_for_the_searched_trials_still_running() -> None:
    running_search = Draw(C, TrialState.RUNNING, None, False)
    assert confirmation_choice([done(A, 0.5), running_search], 2, "minimize") == "wait"
    running_confirmation = Draw(B, TrialState.RUNNING, None, True)
    draws = [done(A, 0.5), done(B, 0.4), running_confirmation]
    assert confirmation_choice(draws, 2, "minimize") == A
    pruned_only = [Draw(A, TrialState.PRUNED, 0.1, False)]
    assert confirmation_choice(pruned_only, 2, "minimize") == "search"


def test_the_confirmation_window_is_the_last_top_times_seeds_slots() -> None:
    plan = ConfirmPlan.of({"confirm": {"top": 3, "seeds": 2}})
    assert plan is not None
    assert plan.trials == 6
    assert [plan.is_confirmation_slot(slot, 10) for slot in range(10)] == [False] * 4 + [True] * 6
    assert ConfirmPlan.of({"confirm": None}) is None
    assert ConfirmPlan.of({"confirm": {}}) == ConfirmPlan(top=3, seeds=2)  # the spec's defaults
    assert ConfirmPlan.of({}) is None


# --- the confirmed best ---------------------------------------------------------------------


def test_the_confirmed_best_is_the_best_mean_over_two_or_more_draws() -> None:
    draws = [
        (0, A, 0.10, False),
        (1, B, 0.20, False),
        (2, A, 0.40, True),
        (3, B, 0.22, True),
        (4, C, 0.01, False),
        (5, B, 0.24, True),
    ]
    best = confirmed_best(draws, "minimize")
    assert best is not None
    # A's luckiest draw (0.10) leads the study, but its mean 0.25 loses to B's 0.22
    assert best.params == B
    assert best.mean == pytest.approx((0.20 + 0.22 + 0.24) / 3)
    assert best.stdev == pytest.approx(((0.02**2 + 0 + 0.02**2) / 2) ** 0.5)
    assert (best.values, best.trials, best.best_trial) == ([0.20, 0.22, 0.24], [1, 3, 5], 1)
    # its confirmations alone: free of the selection of trial 1's draw for being good
    assert best.confirmations_mean == pytest.approx(0.23)
    by_max = confirmed_best(draws, "maximize")
    assert by_max is not None
    assert (by_max.params, by_max.best_trial) == (A, 2)
    assert confirmed_best([(0, A, 0.1, False), (1, B, 0.2, False)], "minimize") is None


def test_a_configuration_that_diverged_on_a_seed_is_not_confirmed() -> None:
    draws = [(0, A, 0.10, False), (1, A, 0.12, True), (2, B, 0.20, False), (3, B, 0.22, True)]
    best = confirmed_best(draws, "minimize", diverged=[A, C])  # A blew up on a third seed
    assert best is not None
    assert (best.params, best.diverged_left_out) == (B, 1)  # (C never trained: not counted)
    assert confirmed_best(draws, "minimize", diverged=[A, B]) is None
    unaffected = confirmed_best(draws, "minimize")
    assert unaffected is not None
    assert (unaffected.params, unaffected.diverged_left_out) == (A, 0)


# --- the spec -----------------------------------------------------------------------------


def test_confirm_defaults_to_the_three_best_with_two_more_seeds_each() -> None:
    study = StudySpec.model_validate(valid_spec(confirm={}))
    assert study.confirm is not None
    assert (study.confirm.top, study.confirm.seeds) == (3, 2)
    assert StudySpec.model_validate(valid_spec()).confirm is None


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"confirm": {"top": 3, "seeds": 4}}, "top × seeds = 12 confirmation trials leave none"),
        ({"confirm": {"top": 0}}, "greater than or equal to 1"),
        ({"confirm": {"top": 1, "runs": 2}}, "Extra inputs are not permitted"),
        (
            {"confirm": {}, "sampler": {"name": "grid"}},
            "the grid sampler runs each grid point once",
        ),
        (
            {"confirm": {}, "objective": [{"metric": "val_data_loss"}, {"metric": "n_parameters"}]},
            "confirm retrains a single-objective study's best",
        ),
    ],
)
def test_a_confirm_that_cannot_run_is_refused_naming_it(
    overrides: dict[str, Any], says: str
) -> None:
    search_space = {"learning_rate": {"type": "float", "low": 0.001, "high": 0.1, "step": 0.001}}
    with pytest.raises(ValidationError, match=says):
        StudySpec.model_validate(valid_spec(search_space=search_space, **overrides))


def test_the_api_refuses_a_confirm_larger_than_the_budget_and_stores_nothing(
    client: TestClient,
) -> None:
    body = valid_spec(confirm={"top": 5, "seeds": 2})  # 10 of n_trials 10
    response = client.post("/api/v1/studies", json=body)
    assert response.status_code == 422
    assert "confirm" in response.text
    assert "raise n_trials above 10" in response.text
    assert client.get("/api/v1/studies").json()["total"] == 0


def test_a_confirming_study_with_its_own_time_budget_is_warned_it_may_end_first(
    client: TestClient,
) -> None:
    timed = valid_spec(confirm={}, budget={"n_trials": 10, "timeout_s": 600})
    response = client.post("/api/v1/studies", json=timed)
    assert response.status_code == 201, response.text
    (warning,) = response.json()["warnings"]
    assert "budget.timeout_s (600 s) ends the study before them" in warning
    detail = client.get(f"/api/v1/studies/{response.json()['id']}").json()
    assert detail["warnings"] == [warning]
    untimed = client.post("/api/v1/studies", json=valid_spec(confirm={}))
    assert untimed.json()["warnings"] == []


def test_the_study_detail_reports_the_confirmed_best_beside_the_luckiest_draw(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    study_id = seed_study(db, spec=valid_spec(confirm={"top": 1, "seeds": 2}), n_trials=4)
    for number, (params, value, confirmation) in enumerate(
        [(A, 0.3, False), (B, 0.1, False), (B, 0.5, True), (B, 0.6, True)]
    ):
        seed_trial(db, study_id, number, params=params, value=value, confirmation=confirmation)
    detail = client.get(f"/api/v1/studies/{study_id}").json()
    assert detail["best_trial"]["number"] == 1
    confirmed = detail["confirmed_best"]
    assert (confirmed["params"], confirmed["trials"], confirmed["best_trial"]) == (B, [1, 2, 3], 1)
    assert confirmed["mean"] == pytest.approx(0.4)
    assert confirmed["stdev"] == pytest.approx(statistics.stdev([0.1, 0.5, 0.6]))
    trials = client.get(f"/api/v1/studies/{study_id}/trials", params={"sort": "number"}).json()
    assert [t["confirmation"] for t in trials["items"]] == [False, False, True, True]
    export = client.get(f"/api/v1/studies/{study_id}/export", params={"format": "json"}).json()
    assert [row["confirmation"] for row in export] == [False, False, True, True]
    # B blows up on a third seed: a mean over the seeds that trained would hide it, so the
    # study has no confirmed best left (A has one draw)
    seed_trial(db, study_id, 4, params=B, value=None, state="failed", problem_labels=",diverged,")
    assert client.get(f"/api/v1/studies/{study_id}").json()["confirmed_best"] is None
    plain = seed_study(db)  # without confirm: no confirmed best, however its trials repeat
    for number in range(2):
        seed_trial(db, plain, number, params=A, value=0.2)
    assert client.get(f"/api/v1/studies/{plain}").json()["confirmed_best"] is None


# --- the worker -----------------------------------------------------------------------------


def test_confirmations_repeat_the_best_configuration_with_new_seeds_and_are_never_pruned(
    tmp_path: Path,
) -> None:
    queue, storage = InMemoryWorkQueue(), optuna.storages.InMemoryStorage()
    prunes: list[bool] = []

    class Recording(FakeTrainer):
        def one(self, config: Any, reporter: Any, *args: Any, **kwargs: Any) -> Any:
            prunes.append(reporter.prunes)
            return super().one(config, reporter, *args, **kwargs)

    trainer = Recording()
    study_spec = loop_spec(
        budget={"n_trials": 5, "max_epochs": 3},
        pruner={"name": "median", "n_startup_trials": 0, "n_warmup_steps": 0},
        confirm={"top": 1, "seeds": 2},
    )
    study_id = queued(queue, study_spec)
    assert make_loop(queue, storage, trainer, tmp_path).run() == 0

    trials = queue.trials(study_id)
    configs = [config for config, _ in trainer.calls]
    searched = [t for t in trials if not t.confirmation]
    best = min((t for t in searched if t.state == TrialState.COMPLETE), key=lambda t: t.value or 0)
    assert [t.confirmation for t in trials] == [False, False, False, True, True]
    assert [t.params for t in trials[3:]] == [best.params, best.params]
    assert [learning_rate(c) for c in configs[3:]] == [
        pytest.approx(best.params["learning_rate"])
    ] * 2
    assert len({c.seed for c in configs}) == 5  # each draw its own training seed
    assert prunes == [True, True, True, False, False]
    assert all(t.state == TrialState.COMPLETE for t in trials[3:])
    assert queue.study(study_id).status == StudyStatus.COMPLETED


def study_and_trials(
    sessions: sessionmaker[Session], study_id: int
) -> tuple[Study, Sequence[Trial]]:
    """The study's row and its trials by number, as the worker left them."""
    with sessions() as session:
        study = session.get_one(Study, study_id)
        trials = session.scalars(
            select(Trial).where(Trial.study_id == study_id).order_by(Trial.number)
        ).all()
    return study, trials


def test_a_confirming_study_runs_to_its_confirmed_best_on_the_database(
    migrated_database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    study_spec = spec(budget={"n_trials": 4, "max_epochs": 2}, confirm={"top": 1, "seeds": 2})
    study_id = add_study(sessions, study_spec)
    run_worker_until_idle(migrated_database_url, tmp_path)

    study, trials = study_and_trials(sessions, study_id)
    with sessions() as session:
        detail = get_study(session, study_id)
    assert study.status == StudyStatus.COMPLETED
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert [t.confirmation for t in trials] == [False, False, True, True]
    first_best = min(trials[:2], key=lambda t: t.value if t.value is not None else 1e9)
    assert [t.params for t in trials[2:]] == [first_best.params] * 2
    # new seeds: the same configuration trains to different values
    values = [t.value for t in trials if t.params == first_best.params]
    assert len(set(values)) == 3
    confirmed = detail.confirmed_best
    assert confirmed is not None
    assert confirmed.params == first_best.params
    assert confirmed.mean == pytest.approx(statistics.fmean(v for v in values if v is not None))
    assert confirmed.trials == [t.number for t in trials if t.params == first_best.params]
    storage = optuna.storages.RDBStorage(migrated_database_url)
    try:
        frozen = optuna.load_study(study_name=study.optuna_study_name, storage=storage).trials
    finally:
        storage.engine.dispose()
    assert [t.params for t in frozen[2:]] == [first_best.params] * 2
    # Optuna's record marks them too: its importances leave them out
    assert [t.user_attrs.get("hpsearch_confirmation") for t in frozen] == [None, None, True, True]
    with sessions() as session:
        settings = settings_for(migrated_database_url, tmp_path)
        assert get_param_importances(session, settings, study_id).n_trials == 2
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in frozen)


def test_an_extended_confirming_study_searches_then_confirms_again(
    migrated_database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    study_spec = spec(budget={"n_trials": 3, "max_epochs": 2}, confirm={"top": 1, "seeds": 1})
    study_id = add_study(sessions, study_spec)
    run_worker_until_idle(migrated_database_url, tmp_path)
    with sessions() as session:
        extend_study(session, settings_for(migrated_database_url, tmp_path), study_id, 2)
    run_worker_until_idle(migrated_database_url, tmp_path)

    study, trials = study_and_trials(sessions, study_id)
    assert (study.status, study.n_trials) == (StudyStatus.COMPLETED, 5)
    # the window moved with n_trials: trial 2 confirmed the first search, trial 4 the whole
    assert [t.confirmation for t in trials] == [False, False, True, False, True]
    searched = [t for t in trials if not t.confirmation]
    best = min(searched, key=lambda t: t.value if t.value is not None else 1e9)
    assert trials[2].params == min(searched[:2], key=lambda t: t.value or 1e9).params
    assert trials[4].params == best.params


def test_the_report_leaves_out_a_configuration_that_diverged_on_a_seed_and_says_so(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    study_id = seed_study(
        db,
        status="completed",
        spec=valid_spec(confirm={"top": 2, "seeds": 1}),
        n_trials=5,
        objective_metric="val_loss",
    )
    sgd = {"optimizer": "sgd", "learning_rate": 0.01}
    adam = {"optimizer": "adam", "learning_rate": 0.002}
    for number, params, value, confirmation, state, labels in [
        (0, sgd, 0.30, False, "complete", None),
        (1, adam, 0.20, False, "complete", None),
        (2, sgd, 0.32, True, "complete", None),
        (3, adam, 0.21, True, "complete", None),
        (4, adam, None, True, "failed", ",diverged,"),  # a third seed blew up
    ]:
        seed_trial(
            db,
            study_id,
            number,
            params=params,
            value=value,
            confirmation=confirmation,
            state=state,
            problem_labels=labels,
        )
    report = client.get(f"/api/v1/studies/{study_id}/report").json()
    confirmed = report["confirmed_best"]
    assert (confirmed["params"], confirmed["diverged_left_out"]) == (sgd, 1)  # not adam's 0.205
    assert any(
        "1 configuration(s) that diverged on one of their seeds were left out" in line
        for line in report["summary"]
    )
    assert client.get(f"/api/v1/studies/{study_id}").json()["confirmed_best"] == confirmed


def test_the_report_states_the_confirmed_best_and_groups_only_searched_trials(
    client: TestClient, db: sessionmaker[Session]
) -> None:
    spec_with_confirm = valid_spec(confirm={"top": 1, "seeds": 2})
    study_id = seed_study(
        db, status="completed", spec=spec_with_confirm, n_trials=6, objective_metric="val_loss"
    )
    sgd = {"optimizer": "sgd", "learning_rate": 0.01}
    rows = [
        ({"optimizer": "adam", "learning_rate": 0.001}, 0.30, False),
        (sgd, 0.10, False),
        ({"optimizer": "adam", "learning_rate": 0.002}, 0.20, False),
        ({"optimizer": "adam", "learning_rate": 0.003}, 0.25, False),
        (sgd, 0.40, True),
        (sgd, 0.40, True),
    ]
    for number, (params, value, confirmation) in enumerate(rows):
        seed_trial(db, study_id, number, params=params, value=value, confirmation=confirmation)
    response = client.get(f"/api/v1/studies/{study_id}/report")
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["n_trials"], report["n_confirmations"]) == (4, 2)  # searched, confirming
    assert report["summary"][0].endswith(
        "4 of 4 finished trials complete (and 2 confirmations); objective minimize val_loss"
    )
    optimizer = next(t for t in report["techniques"] if t["parameter"] == "optimizer")
    assert {g["label"]: g["n"] for g in optimizer["groups"]} == {
        "optimizer=adam": 3,
        "optimizer=sgd": 1,
    }
    assert report["confirmed_best"]["trials"] == [1, 4, 5]
    assert report["confirmed_best"]["mean"] == pytest.approx(0.3)
    assert (
        "confirmed best: trials 1, 4, 5 trained one configuration with 3 seeds, val_loss 0.3 "
        "± 0.17 on average (0.4 over its confirmations alone)" in report["summary"]
    )
    markdown = report_markdown(report)
    assert "## Confirmed best\n\nTrials 1, 4, 5: mean val_loss 0.3 ± 0.17 over 3 seeds" in markdown
    assert "| optimizer | sgd |" in markdown
    assert "<h2>Confirmed best</h2>\n<p>Trials 1, 4, 5: mean val_loss 0.3" in report_html(report)

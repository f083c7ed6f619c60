"""Service overhead: a 20-trial digits study run by a worker on PostgreSQL vs the same trial
configs run by `run_trial` in a plain loop, in one process, one run. The study is
examples/digits-techniques.json (TPE over initializer, optimizer, regularizer, λ, dropout,
learning rate, batch size; EarlyStopping patience 3) with 20 trials and no pruner (a pruned
trial would not be the same work as its plain run).

The worker path is everything a trial costs in the service: the claim, Optuna's ask (sampling
the conditional space), the trial and epoch rows written as it trains, the result, Optuna's
tell and the study's bookkeeping. The plain loop then runs each trial's own TrialConfig (same
params, same seed) with `run_trial` and nothing else. Both use one torch thread; the data
splits are cached per process and warmed first. Rounds alternate which side runs first
(the plain loop, when first, runs the previous round's configs: the seeded study samples the
same ones each round). Prints both totals and their ratio.

    .venv/bin/python bench/service_overhead.py [--trials 20] [--repeats 3] [--pruner none]
        [--sampler tpe|random] [--mode study|paired] [--epochs N]
        [--url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

`--mode paired` measures the same thing trial by trial, so that this machine's drifts (the
same code here runs 20-40 % slower for tens of seconds at a time) hit both sides alike: a
started worker claims and runs one trial (everything the service does per trial: the claim,
Optuna, the rows, the result), then the plain loop runs that trial's config, or the other way
round (alternating, the plain side on the previous round's configs); the ratio is over the
sums, with the median of the per-pair ratios beside it. The worker's start (engines, Optuna's
storage, registration: once per worker process, not per study) is reported on its own.

Target: ratio <= 1.03.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import torch
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.db.engine import create_db_engine, make_session_factory, transaction
from service.db.migrate import upgrade
from service.db.models import Study, Trial
from service.process import freeze_startup_objects
from service.studies.spec import StudySpec
from service.worker.loop import WorkerOptions, WorkerProcess
from trainer import run_trial

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits-techniques.json"


class NoReporter:
    def report(self, epoch: int, value: float) -> None:
        pass

    def should_prune(self) -> bool:
        return False


def study_spec(
    n_trials: int, pruner: str, sampler: str = "tpe", epochs: int | None = None
) -> StudySpec:
    """examples/digits-techniques.json with n_trials, one trial at a time, the pruner and
    the sampler (seeded); with `epochs`, every trial runs that many (no early stopping)."""
    spec: dict[str, Any] = json.loads(EXAMPLE.read_text())
    spec["budget"] = {**spec["budget"], "n_trials": n_trials, "max_parallel_trials": 1}
    spec["pruner"] = {"name": pruner}
    spec["sampler"] = {"name": sampler, "seed": 42}
    if epochs is not None:
        spec["budget"]["max_epochs"] = epochs
        spec["early_stopping"] = None
    return StudySpec.model_validate(spec)


def fresh_database(server_url: str) -> str:
    name = f"hps_bench_{uuid.uuid4().hex[:8]}"
    libpq = make_url(server_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(libpq, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    return url


def drop_database(server_url: str, url: str) -> None:
    libpq = make_url(server_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(libpq, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def queue_study(factory: sessionmaker[Session], spec: StudySpec, max_parallel: int = 1) -> int:
    """The study row a REST submit would store (its id)."""
    with transaction(factory) as session:
        study = Study(
            name=spec.name,
            spec=spec.model_dump(mode="json"),
            direction=spec.primary.resolved_direction,
            objective_metric=spec.primary.metric,
            n_trials=spec.budget.n_trials,
            max_parallel_trials=max_parallel,
            optuna_study_name=f"hps-{uuid.uuid4().hex}",
        )
        session.add(study)
        session.flush()
        return study.id


def through_the_service(url: str, spec: StudySpec, data_dir: Path) -> tuple[float, list[Trial]]:
    engine = create_db_engine(url)
    factory = make_session_factory(engine)
    study_id = queue_study(factory, spec)
    settings = Settings(database_url=url, data_dir=data_dir)
    started = time.perf_counter()
    worker = WorkerProcess(
        settings, WorkerOptions(device="cpu", num_threads=1, exit_when_idle=True)
    )
    worker.run()
    elapsed = time.perf_counter() - started
    with factory() as session:
        trials = list(
            session.scalars(select(Trial).where(Trial.study_id == study_id).order_by(Trial.number))
        )
    engine.dispose()
    return elapsed, trials


def plain_loop(spec: StudySpec, trials: list[Trial], checkpoints: Path) -> float:
    template = spec.template()
    configs = [
        dataclasses.replace(template.config_for(trial.params), seed=spec.seed + trial.number)
        for trial in trials
    ]
    started = time.perf_counter()
    for index, config in enumerate(configs):
        run_trial(config, NoReporter(), checkpoints / f"plain-{index}", device="cpu", num_threads=1)
    return time.perf_counter() - started


def paired_round(
    url: str, spec: StudySpec, data_dir: Path, previous: list[Trial] | None
) -> tuple[float, list[float], list[float], list[Trial]]:
    """The worker's start, then per trial the service's time and the plain loop's time (see
    the module's doc), and the trials as stored."""
    engine = create_db_engine(url)
    factory = make_session_factory(engine)
    study_id = queue_study(factory, spec)
    template = spec.template()
    started = time.perf_counter()
    worker = WorkerProcess(
        Settings(database_url=url, data_dir=data_dir),
        WorkerOptions(device="cpu", num_threads=1, exit_when_idle=True),
    )
    runner = worker.loop.make_runner()
    start_s = time.perf_counter() - started
    service_times: list[float] = []
    plain_times: list[float] = []

    def plain(index: int, trial: Trial) -> None:
        config = dataclasses.replace(
            template.config_for(trial.params), seed=spec.seed + trial.number
        )
        started = time.perf_counter()
        run_trial(config, NoReporter(), data_dir / f"plain-{index}", device="cpu", num_threads=1)
        plain_times.append(time.perf_counter() - started)

    claim = None  # the next trial, when the last one's result claimed it (as a worker does)
    try:
        for index in range(spec.budget.n_trials):
            plain_first = previous is not None and index % 2 == 1
            if plain_first and previous is not None:
                plain(index, previous[index])
            started = time.perf_counter()
            current = claim or worker.loop.claim_next()
            assert current is not None, "the study ran out of trials early"
            claim = worker.loop.run_claimed(runner, current)
            service_times.append(time.perf_counter() - started)
            if not plain_first:
                with factory() as session:
                    plain(index, session.get_one(Trial, current.trial_id))
        assert claim is None, "the study claimed more than its trials"
    finally:
        worker.close()
    with factory() as session:
        trials = list(
            session.scalars(select(Trial).where(Trial.study_id == study_id).order_by(Trial.number))
        )
    engine.dispose()
    return start_s, service_times, plain_times, trials


def paired(args: argparse.Namespace, spec: StudySpec) -> None:
    ratios, per_pair, starts = [], [], []
    previous: list[Trial] | None = None
    for repeat in range(args.repeats + 1):  # the first round warms caches and is not counted
        url = fresh_database(args.url)
        data_dir = Path(tempfile.mkdtemp(prefix="hps-bench-"))
        try:
            start_s, service, plain, trials = paired_round(url, spec, data_dir, previous)
        finally:
            drop_database(args.url, url)
            shutil.rmtree(data_dir, ignore_errors=True)
        if previous is not None and _configs(trials) != _configs(previous):
            print("note: this round's study sampled other configs than the last one")
        previous = trials
        pairs = [s / p for s, p in zip(service, plain, strict=True)]
        label = "warm-up" if repeat == 0 else f"run {repeat}"
        print(
            f"{label}: worker start {start_s * 1000:.0f} ms; per trial: service "
            f"{sum(service):.2f} s, plain {sum(plain):.2f} s, "
            f"ratio {sum(service) / sum(plain):.3f} "
            f"(median pair {statistics.median(pairs):.3f}); "
            f"service - plain {1000 * (sum(service) - sum(plain)) / len(service):.1f} ms per trial"
        )
        if repeat:
            ratios.append(sum(service) / sum(plain))
            per_pair.append(statistics.median(pairs))
            starts.append(start_s)
    print(
        f"ratio of sums median {statistics.median(ratios):.3f} [{min(ratios):.3f}-"
        f"{max(ratios):.3f}], per-pair median {statistics.median(per_pair):.3f} "
        f"[{min(per_pair):.3f}-{max(per_pair):.3f}], worker start "
        f"{1000 * statistics.median(starts):.0f} ms [{1000 * min(starts):.0f}-"
        f"{1000 * max(starts):.0f}]"
    )


def _configs(trials: list[Trial]) -> list[tuple[int, dict[str, Any]]]:
    return [(trial.number, trial.params) for trial in trials]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pruner", default="none", help="the study's pruner (median reports)")
    parser.add_argument("--sampler", default="tpe", help="tpe (the example's) or random")
    parser.add_argument("--mode", choices=("study", "paired"), default="study")
    parser.add_argument(
        "--epochs", type=int, help="every trial runs this many epochs (no early stopping)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    freeze_startup_objects()  # as a worker process does, for both sides
    spec = study_spec(args.trials, args.pruner, args.sampler, args.epochs)
    if args.mode == "paired":
        paired(args, spec)
        return
    service_times, plain_times, ratios = [], [], []
    previous: list[Trial] | None = None
    for repeat in range(args.repeats + 1):  # the first round warms caches and is not counted
        # Odd rounds run the plain loop first, on the previous round's configs (a seeded study
        # samples the same ones every round), so neither side always runs on warmer caches.
        plain_first = previous is not None and repeat % 2 == 1
        url = fresh_database(args.url)
        data_dir = Path(tempfile.mkdtemp(prefix="hps-bench-"))
        try:
            if plain_first and previous is not None:
                plain_s = plain_loop(spec, previous, data_dir)
                service_s, trials = through_the_service(url, spec, data_dir)
                if _configs(trials) != _configs(previous):
                    print("note: this round's study sampled other configs than the last one")
            else:
                service_s, trials = through_the_service(url, spec, data_dir)
                plain_s = plain_loop(spec, trials, data_dir)
        finally:
            drop_database(args.url, url)
            shutil.rmtree(data_dir, ignore_errors=True)
        previous = trials
        epochs = sum(trial.epochs_run for trial in trials)
        label = "warm-up" if repeat == 0 else f"run {repeat}"
        order = "plain first" if plain_first else "service first"
        print(
            f"{label} ({order}): service {service_s:.2f} s, plain run_trial loop {plain_s:.2f} s, "
            f"ratio {service_s / plain_s:.3f} ({len(trials)} trials, {epochs} epochs)"
        )
        if repeat:
            service_times.append(service_s)
            plain_times.append(plain_s)
            ratios.append(service_s / plain_s)
    print(
        f"service {statistics.median(service_times):.2f} s "
        f"[{min(service_times):.2f}-{max(service_times):.2f}], plain "
        f"{statistics.median(plain_times):.2f} s [{min(plain_times):.2f}-{max(plain_times):.2f}], "
        f"ratio median {statistics.median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}]"
    )


if __name__ == "__main__":
    main()

"""Worker scaling: one study trained by 1 worker process, then by 2, on this host's CPUs.

Each run is a fresh PostgreSQL database and a study of `--trials` digits MLP trials (128-128,
batch 64, 40 epochs, no early stopping, no pruner: every trial is the same amount of work),
run by N `python -m service.worker --device cpu --threads 1 --exit-when-idle` processes.
Throughput is finished trials per second between the first trial's start and the last one's
end, as the database recorded them (process start-up, the same for any N, is left out).
Runs alternate 1, 2, 1, 2, ... so both see the same machine noise.

    .venv/bin/python bench/worker_scaling.py [--trials 16] [--repeats 3]

Target: throughput(2) / throughput(1) >= 1.8 on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from service.db.engine import create_db_engine, make_session_factory
from service.db.models import Study, StudyStatus, Trial
from service.studies.spec import StudySpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from service_overhead import drop_database, fresh_database, queue_study


def study_spec(n_trials: int) -> StudySpec:
    return StudySpec.model_validate(
        {
            "name": "worker-scaling",
            "dataset": {"name": "digits"},
            "model": {"hidden_units": [128, 128]},
            "search_space": {
                "learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}
            },
            "fixed": {"batch_size": 64, "optimizer": "adam"},
            "sampler": {"name": "random", "seed": 0},
            "pruner": {"name": "none"},
            "early_stopping": None,
            "budget": {"n_trials": n_trials, "max_epochs": 40, "max_parallel_trials": 2},
        }
    )


def run(server_url: str, n_trials: int, n_workers: int) -> tuple[float, float]:
    """(trials per second between first start and last end, process wall seconds)."""
    url = fresh_database(server_url)
    data_dir = Path(tempfile.mkdtemp(prefix="hps-scaling-"))
    engine = create_db_engine(url)
    try:
        spec = study_spec(n_trials)
        factory = make_session_factory(engine)
        study_id = queue_study(factory, spec, max_parallel=2)
        environment = {**os.environ, "HPS_DATABASE_URL": url, "HPS_DATA_DIR": str(data_dir)}
        command = [sys.executable, "-m", "service.worker", "--device", "cpu", "--threads", "1"]
        started = time.perf_counter()
        workers = [
            subprocess.Popen(
                [*command, "--exit-when-idle", "--poll", "0.2"],
                env=environment,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(n_workers)
        ]
        for worker in workers:
            if worker.wait(timeout=1800) != 0:
                raise RuntimeError(f"a worker exited with {worker.returncode}")
        wall = time.perf_counter() - started
        with factory() as session:
            status = session.get_one(Study, study_id).status
            first, last, done = session.execute(
                select(
                    func.min(Trial.started_at), func.max(Trial.finished_at), func.count(Trial.id)
                ).where(Trial.study_id == study_id)
            ).one()
        if status != StudyStatus.COMPLETED or done != n_trials or first is None or last is None:
            raise RuntimeError(f"the study ended {status} with {done} trials")
        return done / (last - first).total_seconds(), wall
    finally:
        engine.dispose()
        drop_database(server_url, url)
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rates: dict[int, list[float]] = {1: [], 2: []}
    ratios = []
    for repeat in range(args.repeats):
        pair = {}
        for workers in (1, 2):
            rate, wall = run(args.url, args.trials, workers)
            pair[workers] = rate
            rates[workers].append(rate)
            print(f"run {repeat + 1}, {workers} worker(s): {rate:.3f} trials/s ({wall:.1f} s wall)")
        ratios.append(pair[2] / pair[1])
    for workers, values in rates.items():
        print(
            f"{workers} worker(s): {statistics.median(values):.3f} trials/s "
            f"[{min(values):.3f}-{max(values):.3f}]"
        )
    spread = f"[{min(ratios):.2f}-{max(ratios):.2f}]"
    print(f"speed-up 2 vs 1: median {statistics.median(ratios):.2f} {spread}")


if __name__ == "__main__":
    main()

"""API read load: a 10,000-trial study on PostgreSQL, served by uvicorn, loaded by wrk.

Seeds one study with 10,000 finished trials of 20 epochs each (200,000 epoch rows), starts
`uvicorn` on the app (one process, like `hpsearch serve`), then runs wrk from a second process
on loopback for `--seconds` against `GET /api/v1/studies/{id}/trials?limit=50` and
`GET /api/v1/studies/{id}`, and prints requests/s, p50 and p99 for each.

    .venv/bin/python bench/api_load.py [--url postgresql+psycopg://postgres@127.0.0.1/postgres]
        [--seconds 30] [--connections 8] [--server-workers 1] [--warmup 3]

Needs wrk (Debian: apt-get install wrk). Target: p99 <= 50 ms at >= 300 req/s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import httpx
import psycopg
from sqlalchemy import insert, update
from sqlalchemy.engine import make_url

from service.db.engine import create_db_engine, make_session_factory, transaction
from service.db.migrate import upgrade
from service.db.models import Study, Trial, TrialEpoch, utcnow

TOKEN = "bench-token"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits-techniques.json"
PARAMS = ["sgd", "momentum", "rmsprop", "adam"]


def fresh_database(server_url: str) -> str:
    name = f"hps_bench_{uuid.uuid4().hex[:8]}"
    libpq = make_url(server_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(libpq, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


@contextmanager
def uvicorn_server(url: str, port: int, workers: int = 1) -> Iterator[str]:
    """`uvicorn` on the app (as `hpsearch serve`) over database `url`, in its own process,
    with a throw-away data directory; yields its base URL once `/healthz` answers."""
    data_dir = tempfile.mkdtemp(prefix="hps-bench-")
    env = {**os.environ, "HPS_DATABASE_URL": url, "HPS_API_TOKEN": TOKEN, "HPS_DATA_DIR": data_dir}
    command = [sys.executable, "-m", "uvicorn", "--factory", "service.api.app:create_app"]
    options = ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    server = subprocess.Popen([*command, *options, "--workers", str(workers)], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(data_dir, ignore_errors=True)


def drop_database(server_url: str, url: str) -> None:
    libpq = make_url(server_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(libpq, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def seed(url: str, n_trials: int, n_epochs: int) -> int:
    engine = create_db_engine(url)
    factory = make_session_factory(engine)
    rng = random.Random(0)
    with transaction(factory) as session:
        study = Study(
            name="bench",
            spec=json.loads(EXAMPLE.read_text()),
            status="completed",
            started_at=utcnow(),
            finished_at=utcnow(),
            direction="minimize",
            objective_metric="val_loss",
            n_trials=n_trials,
            max_parallel_trials=4,
            optuna_study_name=f"hps-{uuid.uuid4().hex}",
        )
        session.add(study)
        session.flush()
        study_id = study.id
    now = utcnow()
    trials = [
        {
            "study_id": study_id,
            "number": n,
            "state": rng.choice(["complete"] * 8 + ["pruned"]),
            "params": {"optimizer": rng.choice(PARAMS), "learning_rate": 10 ** rng.uniform(-4, -1)},
            "value": rng.uniform(0.05, 2.0),
            "metrics": {"val_loss": 0.1, "val_accuracy": 0.97},
            "epochs_run": n_epochs,
            "best_epoch": n_epochs - 2,
            "diagnosis": "good_fit",
            "duration_s": rng.uniform(1, 3),
            "started_at": now,
            "finished_at": now,
        }
        for n in range(n_trials)
    ]
    with engine.begin() as connection:
        ids = connection.execute(insert(Trial).returning(Trial.id), trials).scalars().all()
        epochs = [
            {
                "trial_id": trial_id,
                "epoch": e,
                "loss": 1.0 / e,
                "accuracy": 0.9,
                "val_loss": 1.1 / e,
                "val_accuracy": 0.88,
                "lr": 1e-3,
            }
            for trial_id in ids
            for e in range(1, n_epochs + 1)
        ]
        for start in range(0, len(epochs), 20_000):
            connection.execute(insert(TrialEpoch), epochs[start : start + 20_000])
        # The best trial, as the worker keeps it current for a real study.
        complete = [
            (trial_id, float(cast(float, trial["value"])))
            for trial_id, trial in zip(ids, trials, strict=True)
            if trial["state"] == "complete"
        ]
        best = min(complete, key=lambda row: row[1])
        connection.execute(
            update(Study)
            .where(Study.id == study_id)
            .values(best_trial_id=best[0], best_value=best[1])
        )
    # Fresh planner statistics, as autovacuum would have after a real study's inserts.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()
    return study_id


def wrk(url: str, seconds: int, connections: int) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of one wrk run."""
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-H",
            f"Authorization: Bearer {TOKEN}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")

    def percentile(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return rate, percentile("50"), percentile("99")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="seconds of unmeasured load per endpoint first (each server process's first "
        "requests compile statements and fill caches)",
    )
    parser.add_argument(
        "--server-workers", type=int, default=1, help="uvicorn processes (hpsearch serve --workers)"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    url = fresh_database(args.url)
    upgrade(url)
    started = time.perf_counter()
    study_id = seed(url, args.trials, 20)
    print(f"seeded {args.trials} trials x 20 epochs in {time.perf_counter() - started:.1f} s")
    try:
        with uvicorn_server(url, 8765, args.server_workers) as root:
            base = f"{root}/api/v1"
            for name, path in (
                ("trials?limit=50", f"/studies/{study_id}/trials?limit=50"),
                ("study", f"/studies/{study_id}"),
            ):
                if args.warmup > 0:
                    wrk(base + path, args.warmup, args.connections)
                rate, p50, p99 = wrk(base + path, args.seconds, args.connections)
                print(f"GET {name:<16} {rate:8.1f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms")
    finally:
        drop_database(args.url, url)


if __name__ == "__main__":
    main()

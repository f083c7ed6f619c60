"""`python -m service.worker`: one worker process (what `hpsearch worker` runs)."""

from __future__ import annotations

import argparse
import logging
import sys

from service.artifacts import ArtifactStoreError, artifact_store
from service.config import get_settings
from service.db.schema import SchemaError, require_current_schema
from service.worker.db_retry import RETRYABLE
from service.worker.loop import WorkerOptions, run_worker
from service.worker.optuna_mirror import OptunaSchemaError
from service.worker.supervisor import plan_devices, run_supervisor


def _default_threads(device: str) -> int | None:
    import torch

    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    return 1 if on_cpu else None


def _devices(device: str, trials_per_device: int, parser: argparse.ArgumentParser) -> list[str]:
    import torch

    visible = torch.cuda.device_count() if device in ("auto", "cuda") else 0
    try:
        return plan_devices(device, trials_per_device, visible)
    except ValueError as error:
        parser.error(str(error))


def _child_args(args: argparse.Namespace) -> list[str]:
    """The options each child worker process gets (its --device comes from the plan)."""
    child = ["--poll", str(args.poll)]
    if args.threads is not None:
        child += ["--threads", str(args.threads)]
    if args.exit_when_idle:
        child.append("--exit-when-idle")
    if args.max_trials is not None:
        child += ["--max-trials", str(args.max_trials)]
    child += ["--pack-size", str(args.pack_size)]
    return child


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.worker", description=__doc__)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: 1 when training on the CPU, so N workers on N cores "
        "do not oversubscribe them; torch's own default on a GPU)",
    )
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between empty claims")
    parser.add_argument("--exit-when-idle", action="store_true", help="stop when no work is left")
    parser.add_argument("--max-trials", type=int, default=None)
    parser.add_argument(
        "--trials-per-device",
        type=int,
        default=1,
        help="worker processes per device, so small models keep a GPU busy; with --device cuda "
        "(or auto on a GPU host) every visible GPU gets this many",
    )
    parser.add_argument(
        "--pack-size",
        type=int,
        default=8,
        help="train up to this many trials of a study as one fused model where that pays "
        "(small built-in MLPs, a study with max_parallel_trials > 1); 1 turns packing off",
    )
    args = parser.parse_args(argv)
    if args.pack_size < 1:
        parser.error(f"--pack-size must be at least 1, got {args.pack_size}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    devices = _devices(args.device, args.trials_per_device, parser)
    settings = get_settings()
    try:
        # Once here too, so a supervisor stops instead of restarting children that cannot run.
        require_current_schema(settings.effective_database_url)
        artifact_store(settings).check()
    except (SchemaError, ArtifactStoreError) as error:
        print(f"hpsearch worker: {error}", file=sys.stderr)
        return 2
    if len(devices) > 1:
        return run_supervisor(devices, _child_args(args))
    options = WorkerOptions(
        device=devices[0],
        num_threads=args.threads if args.threads is not None else _default_threads(args.device),
        poll_interval_s=args.poll,
        exit_when_idle=args.exit_when_idle,
        max_trials=args.max_trials,
        pack_size=args.pack_size,
    )
    try:
        return run_worker(settings, options)
    except (SchemaError, OptunaSchemaError, ArtifactStoreError) as error:  # changed meanwhile
        print(f"hpsearch worker: {error}", file=sys.stderr)
        return 2
    except RETRYABLE as error:  # still refused after HPS_DB_RETRY_S of retries at start
        reason = str(error.orig or error).strip().splitlines()[0]
        print(
            f"hpsearch worker: the database refused connections for {settings.db_retry_s:.0f} s "
            f"({reason}); start it, raise its max_connections or put PgBouncer in front "
            "(docs/operations.md: Scaling out)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

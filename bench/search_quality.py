"""Search quality: the service's default search against random search, through the service.

Each arm runs `--seeds` studies of one workload through the real path (submit_study, then a
worker claiming, training and recording every trial in a SQLite database), one trial at a
time. Random search is the random sampler with no pruner; the default arm is whatever a spec
that names no sampler or pruner gets. The key figure, for every cross-seed pair (default seed
i against random seed j, i != j; the arms' seeds are drawn from disjoint ranges, so no pair
shares start-up trials):

    epochs the default arm trained (pruned trials included) until its first trial whose
    objective is at or below random search's final best  /  random search's total epochs

reported as the median and min-max over pairs, with the number of pairs that never got
there within the budget, and each arm's best trial's test accuracy (median over seeds).

    .venv/bin/python bench/search_quality.py [--seeds 10] [--trials 40] [--workload digits-mlp]
    .venv/bin/python bench/search_quality.py --workload synthetic --json results.json
    .venv/bin/python bench/search_quality.py --parallel 4 --random-from results.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from service.config import Settings
from service.db.migrate import upgrade
from service.db.models import Study, Trial
from service.studies import submit_study
from service.studies.confirmed import read_confirmed_best
from service.studies.spec import StudySpec
from service.worker.loop import WorkerOptions, WorkerProcess
from service.worker.optuna_bridge import trial_seed

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits-techniques.json"

WORKLOADS: dict[str, dict[str, Any]] = {
    # the digits MLP space of the example study
    "digits-mlp": {},
    # the same space on synthetic data of another shape (wider, more classes, more rows)
    "synthetic": {
        "dataset": {
            "name": "synthetic",
            "config": {"n_samples": 2000, "n_features": 24, "n_classes": 5},
            "validation_split": 0.2,
            "test_split": 0.2,
            "seed": 0,
        },
        "model": {"type": "mlp", "hidden_units": [64, 64], "activation": "relu"},
    },
}

ARMS: dict[str, dict[str, Any]] = {
    "random": {"sampler": {"name": "random"}, "pruner": {"name": "none"}},
    "default": {},  # the service's defaults: whatever a spec without sampler/pruner gets
}
SEED_BASE = {"random": 5000, "default": 1000}


@dataclass
class Run:
    arm: str
    seed: int
    values: list[float | None]  # per trial in claim order (None: pruned or failed)
    epochs: list[int]
    best_value: float | None
    best_test_accuracy: float | None
    wall_s: float
    test_accuracies: list[float | None] | None = None  # per trial (absent in older --json)
    params: list[dict[str, Any]] | None = None  # per trial (absent in older --json)
    confirmations: list[bool] | None = None  # per trial: a confirmation (spec.confirm)
    confirmed_params: dict[str, Any] | None = None  # the study's confirmed best configuration


def _tpe(**options: Any) -> Callable[[], None]:
    """A lever: the default arm's TPE built with `options` (patched into the worker)."""

    def apply() -> None:
        import optuna

        from service.worker import optuna_bridge, runner

        original = optuna_bridge.make_sampler

        def make_sampler(spec: StudySpec, trial_number: int) -> optuna.samplers.BaseSampler:
            if spec.sampler.name != "tpe":
                return original(spec, trial_number)
            seed = (
                None if spec.sampler.seed is None else trial_seed(spec.sampler.seed, trial_number)
            )
            return optuna.samplers.TPESampler(seed=seed, **options)

        runner.make_sampler = make_sampler  # type: ignore[attr-defined]

    return apply


def _successive_halving(**options: Any) -> Callable[[], None]:
    """A lever: the default arm's pruner is Optuna's successive halving with `options`."""

    def apply() -> None:
        import optuna

        from service.worker import runner

        runner.make_pruner = lambda spec: optuna.pruners.SuccessiveHalvingPruner(**options)  # type: ignore[attr-defined]

    return apply


def _patient_median(patience: int) -> Callable[[], None]:
    """A lever: the default MedianPruner prunes a trial only once it has stopped improving for
    `patience` epochs (Optuna's PatientPruner): a slow learner still improving is kept."""

    def apply() -> None:
        import optuna

        from service.worker import optuna_bridge, runner

        original = optuna_bridge.make_pruner

        def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
            return optuna.pruners.PatientPruner(original(spec), patience=patience)

        runner.make_pruner = make_pruner  # type: ignore[attr-defined]

    return apply


def _quarter_gamma(n: int) -> int:
    """TPE's "good" group as a quarter of the trials (Optuna: a tenth), at most 25: under a
    noisy objective a larger group leans less on the few luckiest draws."""
    return min(math.ceil(0.25 * n), 25)


LEVERS: dict[str, tuple[Callable[[], None] | None, dict[str, Any]]] = {
    # name: (a patch of the worker, a change to the default arm's spec)
    "none": (None, {}),
    "multivariate": (_tpe(multivariate=True, group=True), {}),
    "startup5": (_tpe(n_startup_trials=5), {}),
    "multivariate-startup5": (_tpe(multivariate=True, group=True, n_startup_trials=5), {}),
    "hyperband": (None, {"pruner": {"name": "hyperband"}}),
    "no-pruner": (None, {"pruner": {"name": "none"}}),
    "gp": (None, {"sampler": {"name": "gp"}}),
    "gp-no-pruner": (None, {"sampler": {"name": "gp"}, "pruner": {"name": "none"}}),
    "sampled-first": (None, {"sampler": {"first_trial": "sampled"}}),
    "ei64": (_tpe(n_ei_candidates=64), {}),
    "gamma25": (_tpe(gamma=_quarter_gamma), {}),
    "warmup5": (None, {"pruner": {"name": "median", "n_warmup_steps": 5}}),
    "eager-median": (
        None,
        {"pruner": {"name": "median", "n_startup_trials": 2, "n_warmup_steps": 1}},
    ),
    "percentile33-eager": (
        None,
        {
            "pruner": {
                "name": "percentile",
                "percentile": 33.0,
                "n_startup_trials": 2,
                "n_warmup_steps": 1,
            }
        },
    ),
    "successive-halving": (None, {"pruner": {"name": "successive_halving"}}),
    "asha1": (_successive_halving(min_resource=1, reduction_factor=3), {}),
    "patient1": (_patient_median(1), {}),
    # with --parallel: TPE without the constant liar (the service turns it on for parallel trials)
    "no-liar": (_tpe(constant_liar=False), {}),
    # the study's last 6 trials retrain its 3 best configurations with 2 more seeds each
    "confirm": (None, {"confirm": {"top": 3, "seeds": 2}}),
}


def study_spec(
    workload: str,
    arm: str,
    seed: int,
    trials: int,
    max_epochs: int,
    lever: str = "none",
    parallel: int = 1,
) -> StudySpec:
    spec = json.loads(EXAMPLE.read_text())
    for key in ("sampler", "pruner"):
        spec.pop(key, None)
    spec.update(WORKLOADS[workload])
    spec.update(ARMS[arm])
    if arm == "default":
        spec.update(LEVERS[lever][1])
    sampler = dict(spec.get("sampler", {}))
    sampler["seed"] = seed
    spec["sampler"] = sampler
    spec["name"] = f"{workload}-{arm}-{seed}"
    # trial n trains with seed + n: studies' training seeds spaced apart so none share one
    spec["seed"] = 1000 * seed
    spec["budget"] = {
        "n_trials": trials,
        "max_epochs": max_epochs,
        # random search has no order to lose: only the default arm runs trials in parallel
        "max_parallel_trials": parallel if arm == "default" else 1,
        "timeout_s": 24 * 3600,
    }
    return StudySpec.model_validate(spec)


def run_arm(url: str, settings: Settings, spec: StudySpec, arm: str, seed: int) -> Run:
    engine = create_engine(url)
    with Session(engine) as session:
        study_id = submit_study(session, settings, spec).id
    started = time.perf_counter()
    options = WorkerOptions(device="cpu", num_threads=1, exit_when_idle=True)
    WorkerProcess(settings, options).run()
    wall = time.perf_counter() - started
    with Session(engine) as session:
        study = session.get_one(Study, study_id)
        trials = session.scalars(
            select(Trial).where(Trial.study_id == study_id).order_by(Trial.number)
        ).all()
        best = next((t for t in trials if t.id == study.best_trial_id), None)
        confirmed = read_confirmed_best(session, study)
        run = Run(
            arm=arm,
            seed=seed,
            values=[t.value if t.state == "complete" else None for t in trials],
            epochs=[t.epochs_run or 0 for t in trials],
            best_value=study.best_value,
            best_test_accuracy=None if best is None else (best.metrics or {}).get("test_accuracy"),
            wall_s=wall,
            test_accuracies=[(t.metrics or {}).get("test_accuracy") for t in trials],
            params=[dict(t.params) for t in trials],
            confirmations=[t.confirmation for t in trials],
            confirmed_params=None if confirmed is None else confirmed.params,
        )
    engine.dispose()
    return run


def epochs_to_reach(
    run: Run, target: float, *, max_trials: int | None = None, max_epochs: int | None = None
) -> int | None:
    """Epochs `run` trained until its first trial at or below `target`, within its first
    `max_trials` trials and `max_epochs` epochs (None: never)."""
    spent = 0
    for value, epochs in list(zip(run.values, run.epochs, strict=True))[:max_trials]:
        spent += epochs
        if max_epochs is not None and spent > max_epochs:
            return None
        if value is not None and value <= target:
            return spent
    return None


def best_within(run: Run, max_epochs: float) -> tuple[float, float | None, int]:
    """`run`'s best value among the trials it finished within `max_epochs` epochs, that
    trial's test accuracy, and how many trials it ran in that budget."""
    spent, trials = 0, 0
    best: tuple[float, float | None] = (float("inf"), None)
    accuracies = run.test_accuracies or [None] * len(run.values)
    for value, epochs, accuracy in zip(run.values, run.epochs, accuracies, strict=True):
        spent += epochs
        if spent > max_epochs:
            break
        trials += 1
        if value is not None and value < best[0]:
            best = (value, accuracy)
    return best[0], best[1], trials


def summary(runs: list[Run]) -> dict[str, Any]:
    """The key figure per cross-seed pair, with the budget as random's trial count (the
    default arm's first as many trials as random ran) and, where the default arm ran more
    trials (`--default-trials`), also as random's compute (its total epochs)."""
    random_runs = [r for r in runs if r.arm == "random"]
    default_runs = [r for r in runs if r.arm == "default"]
    out: dict[str, Any] = {}
    budgets = {"": False}
    if any(len(r.values) > len(random_runs[0].values) for r in default_runs):
        budgets["equal_compute_"] = True
    for prefix, equal_compute in budgets.items():
        ratios: list[float] = []
        never = 0
        for mine in default_runs:
            for theirs in random_runs:
                if mine.seed - SEED_BASE["default"] == theirs.seed - SEED_BASE["random"]:
                    continue  # same-seed pairs left out (see the module's docstring)
                assert theirs.best_value is not None
                reached = (
                    epochs_to_reach(mine, theirs.best_value, max_epochs=sum(theirs.epochs))
                    if equal_compute
                    else epochs_to_reach(mine, theirs.best_value, max_trials=len(theirs.values))
                )
                if reached is None:
                    never += 1
                else:
                    ratios.append(reached / sum(theirs.epochs))
        out |= {f"{prefix}pairs": len(ratios) + never, f"{prefix}never": never}
        # over all pairs, a pair that never got there counted as beyond the budget
        out[f"{prefix}ratio_median_all_pairs"] = statistics.median(
            sorted(ratios) + [math.inf] * never
        )
        if ratios:
            out |= {
                f"{prefix}ratio_median": statistics.median(ratios),
                f"{prefix}ratio_min": min(ratios),
                f"{prefix}ratio_max": max(ratios),
            }
    if len(budgets) > 1:
        # the default arm's best within random's median compute, and that trial's test accuracy
        cutoff = statistics.median(sum(r.epochs) for r in random_runs)
        bests = [best_within(r, cutoff) for r in default_runs]
        out["equal_compute_default_best_value_median"] = statistics.median(b[0] for b in bests)
        out["equal_compute_default_test_accuracy_median"] = statistics.median(
            b[1] for b in bests if b[1] is not None
        )
        out["equal_compute_default_trials_median"] = statistics.median(b[2] for b in bests)
    for arm, arm_runs in (("random", random_runs), ("default", default_runs)):
        accuracies = [r.best_test_accuracy for r in arm_runs if r.best_test_accuracy is not None]
        out[f"{arm}_test_accuracy_median"] = statistics.median(accuracies) if accuracies else None
        out[f"{arm}_test_accuracy_range"] = (
            [min(accuracies), max(accuracies)] if accuracies else None
        )
        out[f"{arm}_epochs_median"] = statistics.median(sum(r.epochs) for r in arm_runs)
        out[f"{arm}_best_value_median"] = statistics.median(
            r.best_value for r in arm_runs if r.best_value is not None
        )
        out[f"{arm}_wall_s_median"] = statistics.median(r.wall_s for r in arm_runs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="digits-mlp")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0, help="seed index to start from")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument(
        "--default-trials",
        type=int,
        default=None,
        help="the default arm's trial budget (default: --trials); above it, the figure is also "
        "reported within random's compute (its total epochs), the budget a pruned search "
        "spends on more trials",
    )
    parser.add_argument("--max-epochs", type=int, default=15)
    parser.add_argument(
        "--lever", choices=sorted(LEVERS), default="none", help="change the default arm"
    )
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="the default arm's max_parallel_trials (its sampler sees that many running)",
    )
    parser.add_argument(
        "--random-from",
        type=Path,
        default=None,
        help="reuse the random arm of an earlier --json (same workload, seeds and budget)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write every run and the summary")
    args = parser.parse_args()
    torch.set_num_threads(1)
    patch = LEVERS[args.lever][0]
    if patch is not None:
        patch()
    runs: list[Run] = []
    reused: dict[int, Run] = {}
    if args.random_from is not None:
        earlier = json.loads(args.random_from.read_text())
        if earlier["summary"].get("workload", args.workload) != args.workload:
            parser.error(f"{args.random_from} holds another workload")
        reused = {r["seed"]: Run(**r) for r in earlier["runs"] if r["arm"] == "random"}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/search-quality.db"
        upgrade(url)
        settings = Settings(database_url=url, data_dir=Path(tmp) / "data")
        for index in range(args.first_seed, args.first_seed + args.seeds):
            for arm in ("random", "default"):  # alternated: both arms see the same noise
                seed = SEED_BASE[arm] + index
                if arm == "random" and seed in reused:
                    runs.append(reused[seed])  # the random arm does not change with a lever
                    continue
                trials = args.trials
                if arm == "default" and args.default_trials is not None:
                    trials = args.default_trials
                spec = study_spec(
                    args.workload,
                    arm,
                    seed,
                    trials,
                    args.max_epochs,
                    args.lever,
                    args.parallel,
                )
                run = run_arm(url, settings, spec, arm, seed)
                runs.append(run)
                print(
                    f"{args.workload} {arm:7} seed {seed}: best {run.best_value:.4f} "
                    f"test acc {run.best_test_accuracy} epochs {sum(run.epochs)} "
                    f"({run.wall_s:.0f} s)",
                    flush=True,
                )
    result = {
        "workload": args.workload,
        "lever": args.lever,
        "parallel": args.parallel,
        **summary(runs),
    }
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.write_text(
            json.dumps({"summary": result, "runs": [asdict(r) for r in runs]}, indent=2)
        )


if __name__ == "__main__":
    main()

"""Search quality by configuration: the arms' reported best configurations retrained over k seeds.

A trial's objective is one draw from its configuration's spread over training seeds (stdev
0.016 on the digits workload, `seed_noise.py`), and random search's final best is the luckiest
of 40 draws. `search_quality.py`'s figure therefore counts a pair as reached only when the
default arm draws as lucky. This one compares configurations, as a user who deploys the
study's best would: every configuration an arm reported as its best at some point (each new
best trial) is retrained with the same k training seeds (common seeds, so comparisons are
paired), and for every cross-seed pair

    epochs the default arm trained until its reported best configuration's k-seed mean is at
    or below the k-seed mean of random search's final best configuration  /  random's epochs

within random's compute (its total epochs) and within random's trial count, with the pairs
that never got there, and each arm's final best configuration's k-seed mean objective and
test accuracy.

    .venv/bin/python bench/config_quality.py RUNS.json [RUNS.json ...] [--retrain-seeds 5]

RUNS.json: `search_quality.py --json` files of one workload (runs with per-trial params).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from search_quality import SEED_BASE, Run, study_spec

from service.queue.confirmation import config_key  # the key of every retraining
from trainer import run_trial

RETRAIN_SEED_BASE = 9_000_000  # away from the studies' training seeds (1000 * study seed + n)


@dataclasses.dataclass(frozen=True)
class Reported:
    """A trial that became its study's best: its configuration and the epochs spent until then."""

    key: str  # the configuration, as canonical JSON
    epochs_spent: int
    trials_spent: int


def _trials_within(
    run: Run, max_epochs: float
) -> Iterator[tuple[int, float | None, int, int, str]]:
    """`run`'s trials in claim order while within `max_epochs`: (trials so far, value, epochs,
    epochs so far, configuration as canonical JSON)."""
    assert run.params is not None, f"{run.arm} seed {run.seed}: no per-trial params in the JSON"
    spent = 0
    for number, (value, epochs, params) in enumerate(
        zip(run.values, run.epochs, run.params, strict=True), start=1
    ):
        spent += epochs
        if spent > max_epochs:
            return
        yield number, value, epochs, spent, config_key(params)


def random_median_epochs(runs: list[Run]) -> float:
    """Random search's median compute: the default arm's budget where one budget serves all."""
    return statistics.median(sum(r.epochs) for r in runs if r.arm == "random")


def reported_bests(run: Run, max_epochs: int) -> list[Reported]:
    """`run`'s successive best trials (each better than all before it) within `max_epochs`."""
    out: list[Reported] = []
    best = math.inf
    for number, value, _, spent, key in _trials_within(run, max_epochs):
        if value is not None and value < best:
            best = value
            out.append(Reported(key, spent, number))
    return out


def retrain(job: tuple[str, int, int, str, int]) -> tuple[str, int, float, float | None]:
    """One configuration trained with one retraining seed: (key, seed, objective, test acc)."""
    workload, max_epochs, trials, key, seed = job
    torch.set_num_threads(1)
    template = study_spec(workload, "random", 0, trials, max_epochs).template()
    config = dataclasses.replace(template.config_for(json.loads(key)), seed=seed)
    result = run_trial(config, device="cpu")
    value = float("inf") if result.objective_value is None else result.objective_value
    accuracy = None if result.test is None else result.test.accuracy
    return key, seed, value, accuracy


def _number(value: float | None, missing: float) -> float:
    return missing if value is None else value


def draws_within(run: Run, max_epochs: float) -> list[tuple[float, int, str]]:
    """`run`'s finished trials within `max_epochs` as (value, epochs, configuration), best
    first."""
    return sorted(
        (value, epochs, key)
        for _, value, epochs, _, key in _trials_within(run, max_epochs)
        if value is not None
    )


def top_draws(run: Run, n: int, max_epochs: float) -> list[str]:
    """The configurations of `run`'s `n` best single draws among its trials within
    `max_epochs`: what the search sampled, whichever draw it reported."""
    return [key for _, _, key in draws_within(run, max_epochs)[:n]]


def confirm_plan(
    run: Run, budget: float, top: int, seeds_each: int
) -> tuple[list[tuple[float, int, str]], int]:
    """A search that ends by retraining its `top` best draws with `seeds_each` more seeds each
    (each retraining costing as many epochs as its draw's trial): the draws it confirms and
    the confirmation's epochs. The search stops that many epochs before `budget` so that both
    together spend it; fewer search epochs can change the top draws, hence the iteration."""
    cost = 0
    for _ in range(10):
        drawn = draws_within(run, budget - cost)[:top]
        new_cost = seeds_each * sum(epochs for _, epochs, _ in drawn)
        if new_cost <= cost:
            break
        cost = new_cost
    return drawn, cost


CONFIRM_POLICIES = ((1, 0), (3, 1), (5, 1), (3, 2), (3, 3))  # (top draws, more seeds each)
SELECTION_SEEDS = 3  # retraining seeds a confirmation may use; the others judge its choice


def confirm_summary(
    runs: list[Run], values: Mapping[str, Sequence[float]], policies: Sequence[tuple[int, int]]
) -> dict[str, Any]:
    """Each policy's reported configuration, judged on held-out seeds: `values[key]` are a
    configuration's retraining values; a policy picks by the mean of a draw and its first
    `seeds_each` retrainings, and the pick is judged by the mean of the retrainings after
    `SELECTION_SEEDS`. Budgets: random's median compute for the default arm, a random run's
    own epochs for it."""
    cutoff = random_median_epochs(runs)
    summary: dict[str, Any] = {}
    for arm in ("random", "default"):
        for top, seeds_each in policies:
            judged, costs = [], []
            for run in (r for r in runs if r.arm == arm):
                budget = cutoff if arm == "default" else sum(run.epochs)
                drawn, cost = confirm_plan(run, budget, top, seeds_each)
                if not drawn:
                    continue  # the confirmation would leave the search no finished trial
                picked = min(
                    (statistics.fmean([value, *values[key][:seeds_each]]), key)
                    for value, _, key in drawn
                )[1]
                judged.append(statistics.fmean(values[picked][SELECTION_SEEDS:]))
                costs.append(cost)
            summary[f"{arm}_confirm_top{top}_x{seeds_each}"] = {
                "held_out_value_median": statistics.median(judged),
                "held_out_value_range": [min(judged), max(judged)],
                "epochs_median": statistics.median(costs),
            }
    return summary


def confirm_keys(runs: list[Run], policies: Sequence[tuple[int, int]]) -> set[str]:
    """The configurations `confirm_summary` needs retrained."""
    cutoff = random_median_epochs(runs)
    keys: set[str] = set()
    for run in runs:
        budget = cutoff if run.arm == "default" else sum(run.epochs)
        for top, seeds_each in policies:
            keys |= {key for _, _, key in confirm_plan(run, budget, top, seeds_each)[0]}
    return keys


def all_reported_bests(runs: list[Run]) -> dict[int, list[Reported]]:
    """Each run's reported bests (by seed): the default arm's within the largest compute any
    random run spent (every pair's budget), random's over its whole run."""
    window = max(sum(r.epochs) for r in runs if r.arm == "random")
    return {r.seed: reported_bests(r, window if r.arm == "default" else 10**9) for r in runs}


def config_summary(
    runs: list[Run],
    mean_value: Mapping[str, float],
    mean_accuracy: Mapping[str, float],
    top: int = 0,
) -> dict[str, Any]:
    """The figure per cross-seed pair, from each configuration's k-seed mean objective (and
    test accuracy), within random's compute and within random's trial count; with `top`, also
    the best configuration among each run's `top` best draws (the default arm's within
    random's median compute)."""
    random_runs = sorted((r for r in runs if r.arm == "random"), key=lambda r: r.seed)
    default_runs = sorted((r for r in runs if r.arm == "default"), key=lambda r: r.seed)
    bests = all_reported_bests(runs)
    trials = len(random_runs[0].values)
    summary: dict[str, Any] = {}
    for prefix, by_compute in (("equal_compute_", True), ("", False)):
        ratios: list[float] = []
        never = 0
        for mine in default_runs:
            for theirs in random_runs:
                if mine.seed - SEED_BASE["default"] == theirs.seed - SEED_BASE["random"]:
                    continue
                target = mean_value[bests[theirs.seed][-1].key]
                budget = sum(theirs.epochs)
                reached = next(
                    (
                        b.epochs_spent
                        for b in bests[mine.seed]
                        if (b.epochs_spent <= budget if by_compute else b.trials_spent <= trials)
                        and mean_value[b.key] <= target
                    ),
                    None,
                )
                if reached is None:
                    never += 1
                else:
                    ratios.append(reached / budget)
        summary |= {f"{prefix}pairs": len(ratios) + never, f"{prefix}never": never}
        # over all pairs, a pair that never got there counted as beyond the budget
        everyone = sorted(ratios) + [math.inf] * never
        summary[f"{prefix}ratio_median_all_pairs"] = statistics.median(everyone)
        if ratios:
            summary |= {
                f"{prefix}ratio_median": statistics.median(ratios),
                f"{prefix}ratio_min": min(ratios),
                f"{prefix}ratio_max": max(ratios),
            }
    # each arm's final best configuration; the default arm's within random's median compute
    cutoff = random_median_epochs(runs)
    finals = {
        "random": [bests[r.seed][-1].key for r in random_runs],
        "default": [
            [b for b in bests[r.seed] if b.epochs_spent <= cutoff][-1].key for r in default_runs
        ],
    }
    for arm, keys_of_arm in finals.items():
        values = [mean_value[k] for k in keys_of_arm]
        accuracies = [mean_accuracy[k] for k in keys_of_arm]
        summary |= {
            f"{arm}_final_config_value_median": statistics.median(values),
            f"{arm}_final_config_value_range": [min(values), max(values)],
            f"{arm}_final_config_test_accuracy_median": statistics.median(accuracies),
            f"{arm}_final_config_test_accuracy_range": [min(accuracies), max(accuracies)],
        }
    confirmed = [r.confirmed_params for r in default_runs if r.confirmed_params is not None]
    if confirmed:  # the default arm confirmed (spec.confirm): what its studies reported
        values = [mean_value[config_key(p)] for p in confirmed]
        accuracies = [mean_accuracy[config_key(p)] for p in confirmed]
        summary |= {
            "default_confirmed_config_runs": len(confirmed),
            "default_confirmed_config_value_median": statistics.median(values),
            "default_confirmed_config_value_range": [min(values), max(values)],
            "default_confirmed_config_test_accuracy_median": statistics.median(accuracies),
        }
    if top:
        for arm, arm_runs in (("random", random_runs), ("default", default_runs)):
            window = math.inf if arm == "random" else cutoff
            sampled = [min(mean_value[k] for k in top_draws(r, top, window)) for r in arm_runs]
            summary[f"{arm}_best_of_top{top}_draws_config_value_median"] = statistics.median(
                sampled
            )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--retrain-seeds", type=int, default=5)
    parser.add_argument("--max-epochs", type=int, default=15, help="as the runs were made with")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--top",
        type=int,
        default=0,
        help="also retrain each run's N best draws: the best configuration each search sampled",
    )
    parser.add_argument(
        "--cache", type=Path, default=None, help="retraining results kept between invocations"
    )
    parser.add_argument(
        "--confirm",
        action="store_true",
        help="also judge searches that end by retraining their best draws with more seeds",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the summary")
    args = parser.parse_args()

    runs: list[Run] = []
    workloads = set()
    for path in args.runs:
        data = json.loads(path.read_text())
        workloads.add(data["summary"]["workload"])
        runs += [Run(**r) for r in data["runs"]]
    if len(workloads) != 1:
        parser.error(f"the files hold {len(workloads)} workloads; give one")
    workload = workloads.pop()
    trials = min(len(r.values) for r in runs if r.arm == "random")

    cache: dict[str, dict[str, list[float | None]]] = {}
    if args.cache is not None and args.cache.exists():
        cache = json.loads(args.cache.read_text())
    seeds = [str(RETRAIN_SEED_BASE + s) for s in range(args.retrain_seeds)]
    keys = {b.key for reported in all_reported_bests(runs).values() for b in reported}
    keys |= {config_key(r.confirmed_params) for r in runs if r.confirmed_params is not None}
    cutoff = random_median_epochs(runs)
    for run in runs if args.top else []:
        keys |= set(top_draws(run, args.top, math.inf if run.arm == "random" else cutoff))
    if args.confirm:
        if args.retrain_seeds <= SELECTION_SEEDS:
            parser.error(f"--confirm needs --retrain-seeds above {SELECTION_SEEDS}")
        keys |= confirm_keys(runs, CONFIRM_POLICIES)
    jobs = [
        (workload, args.max_epochs, trials, key, int(seed))
        for key in sorted(keys)
        for seed in seeds
        if seed not in cache.get(key, {})
    ]
    print(f"{len(keys)} configurations, {len(jobs)} trainings to run", flush=True)
    with ProcessPoolExecutor(args.jobs) as pool:
        for done, (key, seed, value, accuracy) in enumerate(pool.map(retrain, jobs), start=1):
            cache.setdefault(key, {})[str(seed)] = [value, accuracy]
            if done % 50 == 0 or done == len(jobs):
                print(f"  {done}/{len(jobs)}", flush=True)
                if args.cache is not None:
                    args.cache.write_text(json.dumps(cache))
    means = {k: statistics.fmean(_number(cache[k][s][0], math.inf) for s in seeds) for k in keys}
    accuracies = {k: statistics.fmean(_number(cache[k][s][1], 0.0) for s in seeds) for k in keys}
    summary = {
        "workload": workload,
        "retrain_seeds": args.retrain_seeds,
        **config_summary(runs, means, accuracies, args.top),
    }
    if args.confirm:
        retrained = {k: [_number(cache[k][s][0], math.inf) for s in seeds] for k in keys}
        summary |= confirm_summary(runs, retrained, CONFIRM_POLICIES)
    print(json.dumps(summary, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

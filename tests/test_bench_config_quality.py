"""The arithmetic behind `bench/config_quality.py`: issue 14's figure on configurations
(k-seed means of the arms' reported bests) rather than on single training draws."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name; config_quality
    spec.loader.exec_module(module)  # imports search_quality by name
    return module


@pytest.fixture(scope="module")
def cq() -> ModuleType:
    load("search_quality")
    return load("config_quality")


def run(
    cq: ModuleType, arm: str, index: int, trials: list[tuple[str, float | None, int]], **fields: Any
) -> object:
    """A run of (configuration name, single-draw value, epochs) trials (`fields`: more of
    `Run`'s)."""
    values = [value for _, value, _ in trials]
    return cq.Run(
        arm=arm,
        seed=cq.SEED_BASE[arm] + index,
        values=values,
        epochs=[epochs for _, _, epochs in trials],
        best_value=min(v for v in values if v is not None),
        best_test_accuracy=None,
        wall_s=1.0,
        params=[{"name": name} for name, _, _ in trials],
        **fields,
    )


def key(name: str) -> str:
    return json.dumps({"name": name}, sort_keys=True)


def test_reported_bests_are_each_new_best_trial_within_the_epochs(cq: ModuleType) -> None:
    mine = run(
        cq,
        "default",
        0,
        [("a", 0.5, 10), ("b", None, 2), ("c", 0.3, 10), ("d", 0.4, 10), ("e", 0.1, 10)],
    )
    bests = cq.reported_bests(mine, 42)
    assert [(b.key, b.epochs_spent, b.trials_spent) for b in bests] == [
        (key("a"), 10, 1),
        (key("c"), 22, 3),  # the pruned trial's 2 epochs count
        (key("e"), 42, 5),
    ]
    assert [b.key for b in cq.reported_bests(mine, 41)] == [key("a"), key("c")]


def test_top_draws_are_the_best_single_draws_within_the_epochs(cq: ModuleType) -> None:
    mine = run(
        cq,
        "default",
        0,
        [("a", 0.5, 10), ("b", None, 2), ("c", 0.3, 10), ("d", 0.4, 10), ("e", 0.1, 10)],
    )
    assert cq.top_draws(mine, 2, 42) == [key("e"), key("c")]
    assert cq.top_draws(mine, 2, 41) == [key("c"), key("d")]
    assert cq.top_draws(mine, 9, 41) == [key("c"), key("d"), key("a")]  # pruned: no draw


def test_the_figure_compares_configurations_means_not_single_draws(cq: ModuleType) -> None:
    randoms = [
        run(cq, "random", 0, [("r1", 0.4, 10), ("r2", 0.2, 10)]),  # 20 epochs, best config r2
        run(cq, "random", 1, [("r3", 0.3, 20), ("r4", 0.35, 20)]),  # 40 epochs, best config r3
    ]
    defaults = [
        # a lucky draw (d2: 0.1) of a poor configuration, then a good one (d3) too late
        run(cq, "default", 0, [("d1", 0.5, 10), ("d2", 0.1, 5), ("d3", 0.05, 30)]),
        # a single draw (0.25) above random 0's best draw (0.2) of a configuration that is
        # better on the mean: reached at its first trial
        run(cq, "default", 1, [("d4", 0.25, 5), ("d5", 0.5, 5)]),
    ]
    means = {
        key("r2"): 0.30,
        key("r3"): 0.28,
        key("d1"): 0.5,
        key("d2"): 0.45,
        key("d3"): 0.2,
        key("d4"): 0.29,
        key("r1"): 0.35,
        key("r4"): 0.33,
        key("d5"): 0.4,
    }
    accuracies = {k: 1.0 - v for k, v in means.items()}
    out = cq.config_summary(randoms + defaults, means, accuracies, top=2)
    # pairs (default 0, random 1) and (default 1, random 0) only
    assert out["equal_compute_pairs"] == out["pairs"] == 2
    # default 0 against random 1 (target 0.28, 40 epochs): d3 reaches it at 45 > 40 epochs
    # default 1 against random 0 (target 0.30, 20 epochs): d4 (0.29) at 5 epochs
    assert out["equal_compute_never"] == 1
    assert out["equal_compute_ratio_median"] == pytest.approx(5 / 20)
    assert out["equal_compute_ratio_median_all_pairs"] == float("inf")
    # within random's trial count (2): d3 is the third trial, too late as well
    assert out["never"] == 1
    # final configurations: random's best draws r2, r3; default's within random's median
    # compute (30 epochs): d2 for default 0, d4 for default 1
    assert out["random_final_config_value_median"] == pytest.approx(0.29)
    assert out["default_final_config_value_median"] == pytest.approx((0.45 + 0.29) / 2)
    assert out["default_final_config_test_accuracy_median"] == pytest.approx(1 - (0.45 + 0.29) / 2)
    # the best configuration among each run's 2 best draws: random r2 (0.30) and r3 (0.28);
    # default 0 within 30 epochs d2, d1 (0.45), default 1 d4 (0.29)
    assert out["random_best_of_top2_draws_config_value_median"] == pytest.approx(0.29)
    assert out["default_best_of_top2_draws_config_value_median"] == pytest.approx((0.45 + 0.29) / 2)


def test_a_confirming_arm_is_judged_on_the_configuration_its_studies_confirmed(
    cq: ModuleType,
) -> None:
    randoms = [run(cq, "random", 0, [("r1", 0.4, 10)]), run(cq, "random", 1, [("r2", 0.3, 10)])]
    defaults = [
        run(cq, "default", 0, [("d1", 0.1, 5)], confirmed_params={"name": "c1"}),
        run(cq, "default", 1, [("d2", 0.2, 5)], confirmed_params={"name": "c2"}),
    ]
    means = {key(n): v for n, v in [("r1", 0.4), ("r2", 0.3), ("d1", 0.5), ("d2", 0.6)]}
    means |= {key("c1"): 0.2, key("c2"): 0.25}
    accuracies = {k: 1.0 - v for k, v in means.items()}
    out = cq.config_summary(randoms + defaults, means, accuracies)
    assert out["default_final_config_value_median"] == pytest.approx(0.55)  # the luckiest draws
    assert out["default_confirmed_config_runs"] == 2
    assert out["default_confirmed_config_value_median"] == pytest.approx(0.225)
    assert out["default_confirmed_config_value_range"] == [0.2, 0.25]
    assert out["default_confirmed_config_test_accuracy_median"] == pytest.approx(0.775)
    assert cq.config_key({"b": 1, "a": 2}) == '{"a": 2, "b": 1}'  # one key, whatever the order
    plain = cq.config_summary(
        [*randoms, run(cq, "default", 0, [("d1", 0.1, 5)])], means, accuracies
    )
    assert "default_confirmed_config_runs" not in plain


def test_a_confirmation_spends_its_epochs_out_of_the_searchs_budget(cq: ModuleType) -> None:
    mine = run(cq, "default", 0, [("a", 0.3, 10), ("b", 0.2, 10), ("c", 0.25, 10), ("d", 0.1, 10)])
    # in 40 epochs the top 2 are d and b (20 epochs to retrain once each); the search then
    # stops after 20 epochs, where the top 2 are b and a, again 20 epochs
    drawn, cost = cq.confirm_plan(mine, 40, 2, 1)
    assert [k for _, _, k in drawn] == [key("b"), key("a")]
    assert cost == 20
    assert cq.confirm_plan(mine, 40, 1, 0) == ([(0.1, 10, key("d"))], 0)


def test_a_confirmation_picks_by_the_mean_and_is_judged_on_held_out_seeds(cq: ModuleType) -> None:
    randoms = [
        run(cq, "random", 0, [("r1", 0.2, 10), ("r2", 0.3, 10), ("r3", 0.6, 10), ("r4", 0.7, 10)])
    ]
    defaults = [run(cq, "default", 0, [("x", 0.1, 5), ("y", 0.15, 5), ("z", 0.5, 10)])]
    # retraining values: the first 3 seeds may select, the last 2 judge
    values = {
        key("r1"): [0.5, 0.5, 0.5, 0.5, 0.5],
        key("r2"): [0.25, 0.9, 0.9, 0.3, 0.2],
        key("x"): [0.4, 0.4, 0.4, 0.35, 0.45],
        key("y"): [0.17, 0.17, 0.17, 0.2, 0.2],
    }
    out = cq.confirm_summary(randoms + defaults, values, [(1, 0), (2, 1)])
    # the single best draw is reported as is: r1 and x, judged 0.5 and 0.4
    assert out["random_confirm_top1_x0"]["held_out_value_median"] == pytest.approx(0.5)
    assert out["default_confirm_top1_x0"]["held_out_value_median"] == pytest.approx(0.4)
    # with one more seed each: r2 (0.3, 0.25) beats r1 (0.2, 0.5); y (0.15, 0.17) beats x
    assert out["random_confirm_top2_x1"]["held_out_value_median"] == pytest.approx(0.25)
    assert out["default_confirm_top2_x1"]["held_out_value_median"] == pytest.approx(0.2)
    assert out["random_confirm_top2_x1"]["epochs_median"] == 20
    assert out["default_confirm_top2_x1"]["epochs_median"] == 10

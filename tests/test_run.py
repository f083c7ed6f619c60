"""run_trial end to end: learning, pruning, divergence, checkpoints and resuming."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn import functional as F

from trainer import EpochRecord, TrialConfig, TrialResult, run_trial
from trainer.config import CheckpointConfig, DatasetConfig, EarlyStoppingConfig, ModelConfig
from trainer.data import load_splits
from trainer.lit_module import TrialModule

SMALL_DATA = DatasetConfig(name="synthetic", n_samples=300, n_features=8, n_classes=3)


def small_config(**overrides: Any) -> TrialConfig:
    base: dict[str, Any] = {
        "dataset": SMALL_DATA,
        "model": ModelConfig(hidden_units=(16,)),
        "batch_size": 32,
        "max_epochs": 6,
        "checkpoint": CheckpointConfig(resume_every_s=0.0),
    }
    return TrialConfig(**{**base, **overrides})


class FakeReporter:
    """A Reporter that records reports and prunes after `prune_after` epochs."""

    def __init__(self, prune_after: int | None = None) -> None:
        self.reports: list[tuple[int, float]] = []
        self.prune_after = prune_after

    def report(self, epoch: int, value: float) -> None:
        self.reports.append((epoch, value))

    def should_prune(self) -> bool:
        return self.prune_after is not None and len(self.reports) >= self.prune_after


def curve(result: TrialResult) -> list[float | None]:
    """The learning curve as one flat list (epoch numbers included)."""
    return [
        value
        for r in result.history
        for value in (r.epoch, r.loss, r.accuracy, r.val_loss, r.val_accuracy)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("model", [ModelConfig(type="mlp"), ModelConfig(type="cnn")])
def test_digits_models_reach_90_percent_test_accuracy(model: ModelConfig) -> None:
    config = TrialConfig(
        model=model,
        optimizer={"class_name": "adam", "config": {"learning_rate": 0.003}},
        kernel_initializer="he_normal",
        batch_size=64,
        max_epochs=12,
        early_stopping=EarlyStoppingConfig(patience=3, restore_best_weights=True),
    )
    result = run_trial(config)
    assert result.status == "completed"
    assert result.test is not None
    assert (result.test.accuracy or 0.0) > 0.9
    assert result.diagnosis is not None
    assert result.train is not None
    assert result.diagnosis.train_error == pytest.approx(result.train.error)


def test_result_describes_the_run(tmp_path: Path) -> None:
    reporter = FakeReporter()
    result = run_trial(small_config(), reporter, tmp_path)
    assert result.status == "completed"
    assert [r.epoch for r in result.history] == list(range(1, 7))
    assert result.epochs_run == 6
    assert not result.stopped_early
    # the reporter saw the objective (val_loss) of every epoch, in order
    assert reporter.reports == [(r.epoch, r.val_loss) for r in result.history]
    assert result.best is not None
    assert result.best.val_loss == min(r.val_loss for r in result.history)
    assert result.device == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert result.seed == 0
    assert result.last_checkpoint == str(tmp_path / "last.ckpt")
    assert result.best_checkpoint == str(tmp_path / "best.ckpt")
    assert result.val is not None
    assert result.objective_value == result.val.loss
    assert all(r.lr == pytest.approx(0.001) for r in result.history)


def test_on_epoch_hears_every_epoch_as_it_ends_including_a_diverging_one() -> None:
    heard: list[EpochRecord] = []
    result = run_trial(small_config(max_epochs=3), on_epoch=heard.append)
    assert tuple(heard) == result.history

    diverged: list[EpochRecord] = []
    exploding = small_config(
        optimizer={"class_name": "sgd", "config": {"learning_rate": 1e6}},
        kernel_initializer={"class_name": "random_normal", "config": {"stddev": 10.0}},
    )
    outcome = run_trial(exploding, on_epoch=diverged.append)
    assert outcome.status == "diverged"
    assert tuple(diverged) == outcome.history


def test_same_seed_same_curve_other_seed_other_curve() -> None:
    first = run_trial(small_config(max_epochs=3))
    again = run_trial(small_config(max_epochs=3))
    other = run_trial(small_config(max_epochs=3, seed=1))
    assert curve(first) == curve(again)
    assert curve(first) != curve(other)


def test_pruning_stops_cleanly_after_the_reporter_says_so() -> None:
    reporter = FakeReporter(prune_after=2)
    result = run_trial(small_config(), reporter)
    assert result.status == "pruned"
    assert result.epochs_run == 2
    assert len(reporter.reports) == 2


def test_a_diverging_trial_ends_as_diverged_not_a_crash(tmp_path: Path) -> None:
    config = small_config(
        optimizer={"class_name": "sgd", "config": {"learning_rate": 1e6}},
        kernel_initializer={"class_name": "random_normal", "config": {"stddev": 10.0}},
    )
    result = run_trial(config, checkpoint_dir=tmp_path)
    assert result.status == "diverged"
    assert "non-finite" in result.message
    assert result.objective_value is None
    assert result.diagnosis is None
    assert result.epochs_run < 6
    assert not math.isfinite(result.history[-1].loss) or not math.isfinite(
        result.history[-1].val_loss
    )
    assert result.last_checkpoint is None  # a diverged state is never saved to resume from


def test_restore_best_weights_leaves_the_best_epochs_model() -> None:
    config = small_config(
        max_epochs=15,
        optimizer={"class_name": "sgd", "config": {"learning_rate": 0.5}},
        early_stopping=EarlyStoppingConfig(patience=2, restore_best_weights=True),
    )
    result = run_trial(config)
    assert result.best is not None
    assert result.val is not None
    # the final model is the best epoch's: its validation loss is that epoch's, not the last's
    assert result.val.loss == pytest.approx(result.best.val_loss, rel=1e-6)
    if result.stopped_early:
        assert result.history[-1].val_loss > result.best.val_loss


def test_resuming_continues_at_the_checkpointed_epoch_and_matches_a_straight_run(
    tmp_path: Path,
) -> None:
    straight = run_trial(small_config(max_epochs=6))
    first = run_trial(small_config(max_epochs=3), checkpoint_dir=tmp_path / "a")
    assert first.last_checkpoint is not None
    resumed = run_trial(
        small_config(max_epochs=6), checkpoint_dir=tmp_path / "b", resume_from=first.last_checkpoint
    )
    assert resumed.resumed_from_epoch == 3
    assert [r.epoch for r in resumed.history] == [1, 2, 3, 4, 5, 6]
    # optimizer state, shuffling order and weights came back: the curves agree exactly
    assert curve(resumed) == pytest.approx(curve(straight), rel=1e-6)


def test_interrupted_trial_resumes_with_early_stopping_state(tmp_path: Path) -> None:
    # min_delta so large that only the first epoch counts as an improvement: with patience 4 a
    # straight run stops at epoch 5. If the resumed run forgot `wait`, it would stop later.
    stopping = EarlyStoppingConfig(patience=4, min_delta=10.0)
    straight = run_trial(small_config(max_epochs=20, early_stopping=stopping))
    assert straight.epochs_run == 5
    assert straight.stopped_early

    polls = iter([False, False, True])
    first = run_trial(
        small_config(max_epochs=20, early_stopping=stopping),
        checkpoint_dir=tmp_path,
        stop_requested=lambda: next(polls),
    )
    assert first.status == "interrupted"
    assert first.epochs_run == 3
    assert first.last_checkpoint is not None
    resumed = run_trial(
        small_config(max_epochs=20, early_stopping=stopping),
        checkpoint_dir=tmp_path,
        resume_from=first.last_checkpoint,
    )
    assert resumed.epochs_run == 5
    assert resumed.stopped_early
    assert curve(resumed) == pytest.approx(curve(straight), rel=1e-6)


def test_best_checkpoint_holds_the_best_epoch_and_loads_back(tmp_path: Path) -> None:
    config = small_config(
        max_epochs=8,
        optimizer={"class_name": "sgd", "config": {"learning_rate": 0.5}},
        checkpoint=CheckpointConfig(save_best_only=True),
    )
    result = run_trial(config, checkpoint_dir=tmp_path)
    assert result.best_checkpoint is not None
    assert result.best is not None
    raw = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)
    assert raw["epoch"] == result.best.epoch - 1  # Lightning counts epochs from 0
    module = TrialModule.load_from_checkpoint(result.best_checkpoint, map_location="cpu")
    data = load_splits(config.dataset)
    val = module.evaluate(data.val)
    assert val["loss"] == pytest.approx(result.best.val_loss, rel=1e-5)
    assert val["accuracy"] == pytest.approx(result.best.val_accuracy)


def test_save_weights_only_leaves_out_the_optimizer(tmp_path: Path) -> None:
    config = small_config(max_epochs=2, checkpoint=CheckpointConfig(save_weights_only=True))
    result = run_trial(config, checkpoint_dir=tmp_path)
    assert result.best_checkpoint is not None
    assert result.last_checkpoint is not None
    best = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)
    last = torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)
    assert "optimizer_states" not in best
    assert "state_dict" in best
    assert "optimizer_states" in last  # the resume checkpoint always has the full state


def test_step_save_freq_writes_during_the_epoch(tmp_path: Path) -> None:
    # 180 training rows / batch 32 = 6 steps per epoch; save every 4 steps
    config = small_config(max_epochs=1, checkpoint=CheckpointConfig(save_freq=4))
    result = run_trial(config, checkpoint_dir=tmp_path)
    assert result.best_checkpoint is not None
    saved = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)
    assert saved["hpsearch"]["optimizer_steps"] == 4


def test_loss_is_cross_entropy_plus_the_keras_penalty() -> None:
    l1, l2 = 0.003, 0.02
    config = small_config(
        kernel_regularizer={"class_name": "l1_l2", "config": {"l1": l1, "l2": l2}}
    )
    data = load_splits(config.dataset)
    module = TrialModule(config.to_dict(), data.input_shape, data.n_classes)
    x, y = data.train.X[:10], data.train.y[:10]
    logits = module(x)
    kernels = [m.weight for m in module.network.modules() if isinstance(m, torch.nn.Linear)]
    expected = F.cross_entropy(logits, y) + sum(
        l1 * w.abs().sum() + l2 * (w**2).sum() for w in kernels
    )
    assert module.loss(logits, y, module.penalty()).item() == pytest.approx(expected.item())


def test_activity_penalty_is_divided_by_the_batch_size() -> None:
    factor = 0.01
    config = small_config(activity_regularizer={"class_name": "l2", "config": {"l2": factor}})
    data = load_splits(config.dataset)
    module = TrialModule(config.to_dict(), data.input_shape, data.n_classes)
    x, y = data.train.X[:8], data.train.y[:8]
    logits = module(x)
    assert isinstance(module.network, torch.nn.Sequential)
    hidden = torch.relu(module.network[1](x.flatten(1)))
    expected = F.cross_entropy(logits, y) + factor * (hidden**2).sum() / len(y)
    assert module.loss(logits, y, module.penalty()).item() == pytest.approx(expected.item())


def test_k_fold_cross_validation_reports_mean_and_spread() -> None:
    config = small_config(
        max_epochs=2,
        dataset=DatasetConfig(name="synthetic", n_samples=300, n_features=8, n_classes=3, folds=3),
    )
    result = run_trial(config)
    assert result.folds is not None
    assert len(result.folds.values) == 3
    assert result.objective_value == pytest.approx(sum(result.folds.values) / 3)
    assert result.folds.std >= 0
    assert len(set(result.folds.values)) == 3


def test_cpu_can_be_chosen_explicitly() -> None:
    result = run_trial(small_config(max_epochs=1), device="cpu")
    assert result.device == "cpu"


def test_a_trial_shows_no_warning_about_lightnings_own_deprecated_calls() -> None:
    # Lightning 2.6 calls torch 2.13's deprecated pytree API on every fit: a library user who
    # trains trial after trial would see it once a trial (catch_warnings forgets what it showed).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            run_trial(small_config(max_epochs=1), device="cpu")
    assert not [w for w in caught if "LeafSpec" in str(w.message)]


def test_unknown_device_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="device must be"):
        run_trial(small_config(), device="tpu")


@pytest.mark.gpu
def test_trains_on_the_gpu() -> None:
    result = run_trial(small_config(max_epochs=3), device="cuda")
    assert result.device.startswith("cuda")
    assert result.status == "completed"
    assert result.val is not None
    assert (result.val.accuracy or 0.0) > 0.5


def test_a_result_counts_the_trained_networks_parameters() -> None:
    """Weights and biases of the 8 → 16 → 3 MLP, as Keras's count_params() counts them."""
    result = run_trial(small_config(max_epochs=1), device="cpu")
    assert result.n_parameters == (8 * 16 + 16) + (16 * 3 + 3)
    wider = run_trial(small_config(max_epochs=1, model=ModelConfig(hidden_units=(32, 4))))
    assert wider.n_parameters == (8 * 32 + 32) + (32 * 4 + 4) + (4 * 3 + 3)

"""Trial packing (`trainer.packing`): members of a fused pack train as they would alone."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from trainer import EpochRecord, TrialConfig, TrialResult, run_trial
from trainer import optimizers as keras_optimizers
from trainer.config import (
    AugmentationConfig,
    DatasetConfig,
    EarlyStoppingConfig,
    ModelConfig,
)
from trainer.lit_module import TrialModule
from trainer.losses import loss_function, sparse_categorical_crossentropy
from trainer.packed_mlp import (
    ReluMLP,
    StackedLinear,
    cross_entropy_by_hand,
    mean_squared_error_by_hand,
)
from trainer.packed_optimizers import PerMember, pack_optimizer
from trainer.packing import (
    PackMember,
    pack_key,
    packing_blocker,
    run_pack,
)

DIGITS = DatasetConfig(name="digits", validation_split=0.2, test_split=0.2, seed=0)


def member(
    seed: int,
    *,
    optimizer: Any = "adam",
    dropout: float = 0.0,
    regularizer: Any = None,
    initializer: str = "glorot_uniform",
    epochs: int = 3,
    **fields: Any,
) -> TrialConfig:
    values: dict[str, Any] = {
        "dataset": DIGITS,
        "model": ModelConfig(type="mlp", hidden_units=[32, 16], dropout=dropout),
        "optimizer": optimizer,
        "kernel_initializer": initializer,
        "kernel_regularizer": regularizer,
        "batch_size": 64,
        "max_epochs": epochs,
        "seed": seed,
        **fields,
    }
    return TrialConfig(**values)


def assert_same_trial(alone: TrialResult, packed: TrialResult, rel: float = 1e-4) -> None:
    assert (packed.status, packed.epochs_run, packed.best_epoch, packed.stopped_early) == (
        alone.status,
        alone.epochs_run,
        alone.best_epoch,
        alone.stopped_early,
    )
    assert packed.n_parameters == alone.n_parameters is not None
    for a, b in zip(alone.history, packed.history, strict=True):
        for name in ("loss", "val_loss", "val_data_loss", "accuracy", "val_accuracy", "lr"):
            x, y = getattr(a, name), getattr(b, name)
            if x is None or not math.isfinite(x):
                assert y is None or not math.isfinite(y) or x is None
                continue
            assert y == pytest.approx(x, rel=rel, abs=1e-6), (a.epoch, name)
        assert b.kernel_grad_norms == pytest.approx(
            a.kernel_grad_norms, rel=1e-3, abs=1e-6, nan_ok=True
        )
        assert b.dead_units == pytest.approx(a.dead_units)
    if alone.objective_value is None:
        assert packed.objective_value is None
    else:
        assert packed.objective_value == pytest.approx(alone.objective_value, rel=rel)
        assert alone.test is not None
        assert packed.test is not None
        assert packed.test.accuracy == pytest.approx(alone.test.accuracy, abs=1e-9)
    assert packed.data_fingerprint == alone.data_fingerprint
    assert (packed.diagnosis is None) == (alone.diagnosis is None)


OPTIMIZERS: list[tuple[str, list[dict[str, object]]]] = [
    ("adam", [{"learning_rate": r} for r in (1e-3, 3e-3, 1e-2)]),
    ("adamw", [{"learning_rate": 2e-3, "weight_decay": w} for w in (0.004, 0.05, 0.0)]),
    ("adam", [{"learning_rate": 2e-3, "amsgrad": True, "beta_2": b} for b in (0.999, 0.99, 0.9)]),
    ("sgd", [{"learning_rate": r} for r in (0.01, 0.1, 0.5)]),
    ("momentum", [{"learning_rate": 0.02, "momentum": m} for m in (0.5, 0.9, 0.99)]),
    ("nesterov", [{"learning_rate": r, "momentum": 0.9} for r in (0.01, 0.05, 0.003)]),
    ("rmsprop", [{"learning_rate": 1e-3, "momentum": m} for m in (0.0, 0.5, 0.9)]),
    ("rmsprop", [{"learning_rate": r, "centered": True} for r in (1e-3, 3e-4, 3e-3)]),
]


@pytest.mark.parametrize(("name", "settings"), OPTIMIZERS)
def test_each_member_trains_as_it_would_alone(name: str, settings: list[dict[str, object]]) -> None:
    """Per optimizer: members with their own learning rate (and momentum, decay, ...),
    dropout rate (one without dropout), regularizer, initializer and seed match `run_trial`."""
    regularizers: list[dict[str, object] | None] = [
        None,
        {"class_name": "l2", "config": {"l2": 1e-3}},
        {"class_name": "l1_l2", "config": {"l1": 1e-4, "l2": 1e-4}},
    ]
    initializers = ["glorot_uniform", "he_normal", "orthogonal"]
    configs = [
        member(
            seed,
            optimizer={"class_name": name, "config": settings[seed]},
            dropout=(0.0, 0.2, 0.45)[seed],
            regularizer=regularizers[seed],
            initializer=initializers[seed],
        )
        for seed in range(3)
    ]
    packed = run_pack([PackMember(config) for config in configs], device="cpu")
    for config, result in zip(configs, packed, strict=True):
        assert_same_trial(run_trial(config, device="cpu"), result)


def test_a_diverging_member_fails_alone_and_a_stopping_one_leaves_the_pack() -> None:
    stopping = EarlyStoppingConfig(monitor="val_data_loss", patience=0, min_delta=10.0)
    configs = [
        member(0, epochs=5),
        member(1, optimizer={"class_name": "sgd", "config": {"learning_rate": 1e4}}, epochs=5),
        member(2, epochs=5, early_stopping=stopping),  # no epoch improves by 10: stops at 2
        member(3, epochs=2, dropout=0.3),
    ]
    # one optimizer class per pack: the diverging SGD member trains in its own pack
    sgd_configs = [configs[1], member(4, optimizer="sgd", epochs=5)]
    adam = run_pack([PackMember(c) for c in (configs[0], configs[2], configs[3])], device="cpu")
    sgd = run_pack([PackMember(c) for c in sgd_configs], device="cpu")
    assert sgd[0].status == "diverged"
    assert sgd[0].objective_value is None
    assert "non-finite" in sgd[0].message
    assert [r.epochs_run for r in adam] == [5, 2, 2]
    assert adam[1].stopped_early
    lone = [configs[0], configs[2], configs[3], *sgd_configs]
    for config, result in zip(lone, [*adam, *sgd], strict=True):
        assert_same_trial(run_trial(config, device="cpu"), result)


class PruneAt:
    def __init__(self, epoch: int) -> None:
        self.epoch, self.seen = epoch, 0
        self.reported: list[tuple[int, float]] = []

    def report(self, epoch: int, value: float) -> None:
        self.seen = epoch
        self.reported.append((epoch, value))

    def should_prune(self) -> bool:
        return self.seen >= self.epoch


def test_each_member_hears_its_own_pruner_and_epochs() -> None:
    configs = [member(0, epochs=4), member(1, epochs=4, dropout=0.1)]
    reporters = [PruneAt(99), PruneAt(2)]
    rows: list[list[int]] = [[], []]

    def listener(own: list[int]) -> Callable[[EpochRecord], None]:
        return lambda record: own.append(record.epoch)

    members = [
        PackMember(c, reporter=r, on_epoch=listener(own))
        for c, r, own in zip(configs, reporters, rows, strict=True)
    ]
    results = run_pack(members, device="cpu")
    assert [r.status for r in results] == ["completed", "pruned"]
    assert rows == [[1, 2, 3, 4], [1, 2]]
    alone = run_trial(configs[1], PruneAt(2), device="cpu")
    assert_same_trial(alone, results[1])
    assert [v for _, v in reporters[1].reported] == pytest.approx(
        [r.val_data_loss for r in alone.history], rel=1e-5
    )


def test_an_interrupted_pack_resumes_member_by_member(tmp_path: Path) -> None:
    stopping = EarlyStoppingConfig(monitor="val_data_loss", patience=5, restore_best_weights=True)
    configs = [
        member(seed, epochs=5, dropout=0.25, early_stopping=stopping, regularizer=reg)
        for seed, reg in ((0, None), (1, {"class_name": "l2", "config": {"l2": 1e-3}}))
    ]
    epochs = 0

    def stop_after_two() -> bool:
        nonlocal epochs
        epochs += 1
        return epochs >= 2

    first = run_pack(
        [PackMember(c, checkpoint_dir=tmp_path / f"m{i}") for i, c in enumerate(configs)],
        device="cpu",
        stop_requested=stop_after_two,
    )
    assert [r.status for r in first] == ["interrupted", "interrupted"]
    assert all(r.epochs_run == 2 and r.last_checkpoint for r in first)
    # each member's retry resumes on its own through run_trial (a pack of one)
    resumed = [
        run_trial(c, checkpoint_dir=tmp_path / f"m{i}", resume_from=r.last_checkpoint, device="cpu")
        for i, (c, r) in enumerate(zip(configs, first, strict=True))
    ]
    for config, result in zip(configs, resumed, strict=True):
        straight = run_trial(config, device="cpu")
        assert result.resumed_from_epoch == 2
        assert_same_trial(straight, result)
        assert result.best_checkpoint is not None
        restored = TrialModule.load_from_checkpoint(result.best_checkpoint, map_location="cpu")
        assert isinstance(restored, TrialModule)
        assert restored.config == config


def test_a_resumed_member_trains_beside_a_fresh_one(tmp_path: Path) -> None:
    """A retry resumed at epoch 2 packed with a trial at epoch 0: Adam's step counts differ,
    so each member takes its own fused call (not the shared one); both match alone."""
    configs = [
        member(0, epochs=4, dropout=0.25, regularizer={"class_name": "l2", "config": {"l2": 1e-3}}),
        member(
            1,
            epochs=4,
            dropout=0.1,
            optimizer={"class_name": "adam", "config": {"learning_rate": 3e-3}},
        ),
    ]
    epochs = 0

    def stop_after_two() -> bool:
        nonlocal epochs
        epochs += 1
        return epochs >= 2

    (first,) = run_pack(
        [PackMember(configs[0], checkpoint_dir=tmp_path / "m0")],
        device="cpu",
        stop_requested=stop_after_two,
    )
    assert first.status == "interrupted"
    assert first.last_checkpoint is not None
    resumed, fresh = run_pack(
        [
            PackMember(
                configs[0], checkpoint_dir=tmp_path / "m0", resume_from=Path(first.last_checkpoint)
            ),
            PackMember(configs[1]),
        ],
        device="cpu",
    )
    assert resumed.resumed_from_epoch == 2
    assert_same_trial(run_trial(configs[0], device="cpu"), resumed)
    assert_same_trial(run_trial(configs[1], device="cpu"), fresh)


def test_a_member_with_another_regularizer_is_differentiated_by_autograd() -> None:
    """Keras's L1/L2 gradients are added by hand; the orthogonal regularizer beside them goes
    through autograd. Every member still matches its lone run."""
    regularizers: list[dict[str, object] | None] = [
        {"class_name": "orthogonal", "config": {"factor": 0.05}},
        {"class_name": "l1", "config": {"l1": 1e-3}},
        None,
    ]
    bias_regularizers = [None, {"class_name": "l1_l2", "config": {"l1": 1e-3, "l2": 1e-2}}, None]
    configs = [
        member(seed, dropout=0.2, regularizer=kernel, bias_regularizer=bias)
        for seed, (kernel, bias) in enumerate(zip(regularizers, bias_regularizers, strict=True))
    ]
    packed = run_pack([PackMember(config) for config in configs], device="cpu")
    for config, result in zip(configs, packed, strict=True):
        assert_same_trial(run_trial(config, device="cpu"), result)


def test_members_without_relu_count_no_dead_units() -> None:
    """The pack's batched validation pass counts dead units only behind ReLU, as a lone
    evaluation does; with tanh every member still matches its lone run."""
    configs = [
        member(
            seed,
            model=ModelConfig(type="mlp", hidden_units=[24], activation="tanh", dropout=0.1 * seed),
        )
        for seed in range(2)
    ]
    packed = run_pack([PackMember(config) for config in configs], device="cpu")
    for config, result in zip(configs, packed, strict=True):
        assert all(row.dead_units is None for row in result.history)
        assert_same_trial(run_trial(config, device="cpu"), result)


def test_stacked_linear_gradients_are_those_of_each_members_linear() -> None:
    """The pack's batched Linear (`StackedLinear`): outputs and the gradients of inputs,
    weights and biases equal `F.linear` member by member; weight gradients in the weights'
    own layout."""
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(3, 5, 4, generator=generator, requires_grad=True)
    weight = torch.randn(3, 6, 4, generator=generator, requires_grad=True)
    bias = torch.randn(3, 6, generator=generator, requires_grad=True)
    upstream = torch.randn(3, 5, 6, generator=generator)
    output = StackedLinear.apply(x, weight, bias)  # type: ignore[no-untyped-call]
    (output * upstream).sum().backward()
    assert weight.grad is not None
    assert weight.grad.stride() == weight.stride()
    for member_index in range(3):
        xs, ws, bs = (t.detach()[member_index].clone().requires_grad_() for t in (x, weight, bias))
        alone_output = torch.nn.functional.linear(xs, ws, bs) * upstream[member_index]
        alone_output.sum().backward()  # type: ignore[no-untyped-call]
        for stacked, alone in ((x, xs), (weight, ws), (bias, bs)):
            assert stacked.grad is not None
            assert alone.grad is not None
            torch.testing.assert_close(stacked.grad[member_index], alone.grad)


def test_relu_mlp_backward_is_autograds() -> None:
    """The pack's ReLU MLP with its backward written out (`ReluMLP`): outputs and every
    weight's and bias's gradient are autograd's through the same batched layers
    (`StackedLinear → relu → · dropout noise`) bit for bit, and each member's own
    `F.linear` chain's to float rounding. A member whose noise is all ones stands for one
    without dropout; the second hidden layer has no dropout at all."""
    generator = torch.Generator().manual_seed(3)
    sizes = [(7, 5), (6, 7), (4, 6)]  # (out, in) per layer
    members, batch = 3, 9
    values = []
    for out_units, in_units in sizes:
        values.append(torch.randn(members, out_units, in_units, generator=generator))
        values.append(torch.randn(members, out_units, generator=generator))
    x = torch.randn(members, batch, 5, generator=generator)
    keep = torch.rand(members, batch, 7, generator=generator) >= 0.4
    noise = keep.view(torch.uint8) * torch.tensor([2.0, 1.25, 1.0]).view(3, 1, 1)
    noise[2] = 1.0
    upstream = torch.randn(members, batch, 4, generator=generator)

    def gradients(forward: Callable[[list[torch.Tensor]], torch.Tensor]) -> list[torch.Tensor]:
        params = [value.clone().requires_grad_() for value in values]
        output = forward(params)
        (output * upstream).sum().backward()  # type: ignore[no-untyped-call]
        assert all(p.grad is not None and p.grad.stride() == p.stride() for p in params)
        return [output.detach(), *(p.grad for p in params if p.grad is not None)]

    def by_hand(params: list[torch.Tensor]) -> torch.Tensor:
        output: torch.Tensor = ReluMLP.apply(x, [noise, None], *params)  # type: ignore[no-untyped-call]
        return output

    def by_autograd(params: list[torch.Tensor]) -> torch.Tensor:
        linear = StackedLinear.apply
        hidden = torch.relu(linear(x, params[0], params[1])) * noise  # type: ignore[no-untyped-call]
        hidden = torch.relu(linear(hidden, params[2], params[3]))  # type: ignore[no-untyped-call]
        output: torch.Tensor = linear(hidden, params[4], params[5])  # type: ignore[no-untyped-call]
        return output

    def each_alone(params: list[torch.Tensor]) -> torch.Tensor:
        outputs = []
        for m in range(members):
            w = [p[m] for p in params]
            hidden = torch.relu(torch.nn.functional.linear(x[m], w[0], w[1])) * noise[m]
            hidden = torch.relu(torch.nn.functional.linear(hidden, w[2], w[3]))
            outputs.append(torch.nn.functional.linear(hidden, w[4], w[5]))
        return torch.stack(outputs)

    mine = gradients(by_hand)
    for expected, got in zip(gradients(by_autograd), mine, strict=True):
        assert torch.equal(got, expected)
    for expected, got in zip(gradients(each_alone), mine, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_cross_entropy_by_hand_is_autograds() -> None:
    """The pack's step without autograd (`cross_entropy_by_hand`): each member's batch-mean
    cross-entropy is a lone trial's loss function's (`F.cross_entropy`'s to rounding), and
    its gradient with respect to the logits is autograd's through that loss, member by member,
    bit for bit, `(softmax - one_hot) / B`."""
    generator = torch.Generator().manual_seed(4)
    members, classes = 3, 10
    for batch in (54, 64, 7):  # (batch sizes that are and are not a vector width's multiple)
        logits = 4 * torch.randn(members, batch, classes, generator=generator)
        labels = torch.randint(classes, (members, batch), generator=generator)
        loss, grad = cross_entropy_by_hand(logits, labels)

        lone = loss_function("sparse_categorical_crossentropy")
        for member in range(members):
            leaf = logits[member].clone().requires_grad_()
            per_row = sparse_categorical_crossentropy(leaf, labels[member], reduction="none")
            per_row.mean().backward()  # type: ignore[no-untyped-call]
            assert leaf.grad is not None
            assert torch.equal(loss[member], per_row.mean().detach())
            assert torch.equal(grad[member], leaf.grad)
            mean = lone(logits[member], labels[member])
            reference = torch.nn.functional.cross_entropy(logits[member], labels[member])
            torch.testing.assert_close(mean, loss[member], rtol=1e-6, atol=0)
            torch.testing.assert_close(mean, reference, rtol=1e-6, atol=0)
        one_hot = torch.nn.functional.one_hot(labels, classes).to(logits.dtype)
        torch.testing.assert_close(grad, (logits.softmax(dim=2) - one_hot) / batch)


def test_mean_squared_error_by_hand_is_autograds() -> None:
    """The regression counterpart (`mean_squared_error_by_hand`): each member's mean over its
    batch and output columns of the squared error, and the gradient autograd computes through
    `F.mse_loss` and that mean bit for bit, `2 (outputs - targets) / (B·O)`."""
    generator = torch.Generator().manual_seed(5)
    members, batch, columns = 3, 54, 2
    outputs = torch.randn(members, batch, columns, generator=generator)
    targets = torch.randn(members, batch, columns, generator=generator)
    loss, grad = mean_squared_error_by_hand(outputs, targets)

    leaf = outputs.clone().requires_grad_()
    expected = torch.nn.functional.mse_loss(leaf, targets, reduction="none").flatten(1)
    expected = expected.mean(dim=1)
    expected.sum().backward()  # type: ignore[no-untyped-call]
    assert leaf.grad is not None
    assert torch.equal(loss, expected.detach())
    assert torch.equal(grad, leaf.grad)
    torch.testing.assert_close(grad, 2 * (outputs - targets) / (batch * columns))


def test_best_checkpoint_holds_the_best_epochs_weights(tmp_path: Path) -> None:
    config = member(0, epochs=4, dropout=0.2)
    (result,) = run_pack([PackMember(config, checkpoint_dir=tmp_path)], device="cpu")
    assert result.best_checkpoint == str(tmp_path / "best.ckpt")
    module = TrialModule.load_from_checkpoint(result.best_checkpoint, map_location="cpu")
    state = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)
    assert len(state["hpsearch"]["history"]) == result.best_epoch
    assert module.config == config
    assert result.val is not None


def test_regression_members_match_alone() -> None:
    data = DatasetConfig(
        name="synthetic", config={"task": "regression", "n_samples": 300, "n_features": 5}
    )
    # plain SGD: its updates scale with the gradient, so a wrong loss gradient shows
    configs = [
        member(0, dataset=data, loss="mse", optimizer="sgd"),
        member(1, dataset=data, loss="mse", optimizer="sgd", dropout=0.2),
        member(2, dataset=data, loss="mse", optimizer="sgd", regularizer="l2"),
    ]
    packed = run_pack([PackMember(c) for c in configs], device="cpu")
    for config, result in zip(configs, packed, strict=True):
        alone = run_trial(config, device="cpu")
        assert_same_trial(alone, result)
        for a, b in zip(alone.history, result.history, strict=True):
            assert b.val_mae == pytest.approx(a.val_mae, rel=1e-4)
        assert result.task == "regression"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"model": ModelConfig(type="cnn")}, "only the built-in mlp"),
        ({"model": ModelConfig(type="mlp", config={"batch_norm": True})}, "batch normalization"),
        ({"augmentation": AugmentationConfig(gaussian_noise=0.1)}, "augmentation"),
        ({"activity_regularizer": {"class_name": "l2", "config": {}}}, "activity regularizer"),
        ({"dataset": DatasetConfig(name="digits", folds=3)}, "cross-validation"),
    ],
)
def test_what_cannot_be_packed_is_refused_with_its_reason(
    change: dict[str, Any], reason: str
) -> None:
    config = member(0, **change)
    assert reason in (packing_blocker(config) or "")
    with pytest.raises(ValueError, match=reason):
        run_pack([PackMember(config)], device="cpu")


def test_members_must_share_shape_batch_and_optimizer_class() -> None:
    base = member(0)
    assert pack_key(base) == pack_key(member(1, dropout=0.4, initializer="he_normal"))
    assert pack_key(base) == pack_key(
        member(2, optimizer={"class_name": "adam", "config": {"learning_rate": 0.1}})
    )
    for other in (
        member(1, batch_size=32),
        member(1, optimizer="sgd"),
        member(1, model=ModelConfig(hidden_units=[8])),
    ):
        assert pack_key(other) != pack_key(base)
        with pytest.raises(ValueError, match="differs from member 0"):
            run_pack([PackMember(base), PackMember(other)], device="cpu")


@pytest.mark.parametrize(
    "optimizer",
    [
        {"class_name": "adam", "config": {"learning_rate": 0.01}},
        {"class_name": "adamw", "config": {"learning_rate": 0.01, "weight_decay": 0.1}},
        {"class_name": "nesterov", "config": {"learning_rate": 0.05, "momentum": 0.8}},
        {
            "class_name": "rmsprop",
            "config": {"learning_rate": 0.01, "momentum": 0.5, "centered": True},
        },
    ],
)
def test_stacked_updates_equal_each_members_torch_optimizer(optimizer: dict[str, Any]) -> None:
    """The vectorized update of the built-ins (`packed_optimizers`) against the torch optimizer
    `trainer.optimizers` builds for each member, over 5 steps with member-specific rates."""
    generator = torch.Generator().manual_seed(0)
    members = 3
    factories = []
    for index in range(members):
        settings = dict(optimizer["config"])
        settings["learning_rate"] = float(settings["learning_rate"]) * (index + 1)
        factories.append(
            keras_optimizers.get({"class_name": optimizer["class_name"], "config": settings})
        )
    shapes = [(members, 4, 3), (members, 4)]
    stacked = [torch.randn(shape, generator=generator).requires_grad_() for shape in shapes]
    alone = [[s.detach()[i].clone().requires_grad_() for s in stacked] for i in range(members)]
    packed_optimizer = pack_optimizer(factories, stacked, [[] for _ in range(members)])
    torch_optimizers = [f.build(params) for f, params in zip(factories, alone, strict=True)]
    for _ in range(5):
        grads = [torch.randn(shape, generator=generator) for shape in shapes]
        for tensor, grad in zip(stacked, grads, strict=True):
            tensor.grad = grad.clone()
        packed_optimizer.step()
        for index, (params, opt) in enumerate(zip(alone, torch_optimizers, strict=True)):
            for param, grad in zip(params, grads, strict=True):
                param.grad = grad[index].clone()
            opt.step()
    for index in range(members):
        for tensor, param in zip(stacked, alone[index], strict=True):
            torch.testing.assert_close(tensor.detach()[index], param.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("per_member", [False, True], ids=["stacked", "per-member"])
def test_a_members_optimizer_state_is_a_snapshot(per_member: bool) -> None:
    """A best checkpoint takes `member_state` at its epoch and is written epochs later: the
    steps in between must leave what it took as it was."""
    factories = [
        keras_optimizers.get({"class_name": "adam", "config": {"learning_rate": 0.01}})
        for _ in range(2)
    ]
    stacked = [torch.randn(2, 4, 3).requires_grad_()]
    own = [[torch.nn.Parameter(torch.empty(4, 3))] for _ in range(2)]
    for index, params in enumerate(own):  # the members' Parameters alias their slice
        params[0].data = stacked[0].data[index]
    build = PerMember if per_member else pack_optimizer
    optimizer = build(factories, stacked, own)

    def step() -> None:
        stacked[0].grad = torch.randn(2, 4, 3)
        optimizer.step()

    step()
    taken = optimizer.member_state(1)
    as_taken = copy.deepcopy(taken)
    step()
    tensors = [value for value in _leaves(taken) if isinstance(value, torch.Tensor)]
    assert tensors  # the moments
    for now, then in zip(_leaves(taken), _leaves(as_taken), strict=True):
        assert torch.equal(now, then) if isinstance(now, torch.Tensor) else now == then


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for key in sorted(value, key=str) for leaf in _leaves(value[key])]
    if isinstance(value, list | tuple):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


@pytest.mark.gpu
def test_a_pack_trains_on_the_gpu_as_its_members_alone() -> None:
    """Without dropout nothing random differs on the GPU: members match their lone runs
    (to the GPU kernels' rounding); with dropout each member draws from its own generator."""
    configs = [
        member(seed, optimizer={"class_name": "adam", "config": {"learning_rate": r}})
        for seed, r in ((0, 1e-3), (1, 3e-3))
    ]
    packed = run_pack([PackMember(c) for c in configs], device="cuda")
    for config, result in zip(configs, packed, strict=True):
        assert result.device.startswith("cuda")
        assert_same_trial(run_trial(config, device="cuda"), result, rel=1e-3)
    (noisy,) = run_pack([PackMember(member(2, dropout=0.3))], device="cuda")
    assert noisy.status == "completed"

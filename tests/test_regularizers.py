"""Regularizer penalties and gradients against hand formulas and against Keras 3 itself."""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from collections.abc import Callable
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import pytest
import torch

from trainer import regularizers
from trainer.regularizers import L1, L1L2, L2, OrthogonalRegularizer, Regularizer

#: A torch-layout (out=2, in=3) weight with a zero entry (where sign(w) = 0).
W = torch.tensor([[0.5, -1.0, 2.0], [0.0, 3.0, -0.25]], dtype=torch.float64)
SUM_ABS = 0.5 + 1.0 + 2.0 + 0.0 + 3.0 + 0.25
SUM_SQUARES = 0.25 + 1.0 + 4.0 + 0.0 + 9.0 + 0.0625


def value_and_grad(
    regularizer: Callable[[torch.Tensor], torch.Tensor], weight: torch.Tensor
) -> tuple[float, torch.Tensor]:
    leaf = weight.clone().requires_grad_(True)
    value = regularizer(leaf)
    assert value.dim() == 0
    (grad,) = torch.autograd.grad(value, leaf)
    return float(value.detach()), grad


def keras_layout(weight: torch.Tensor) -> torch.Tensor:
    """Keras's kernel for the same layer: Dense (in, out), Conv2D (kh, kw, in, out)."""
    return weight.t() if weight.dim() == 2 else weight.permute(2, 3, 1, 0)


def test_l1_value_and_gradient() -> None:
    value, grad = value_and_grad(L1(0.3), W)
    assert value == pytest.approx(0.3 * SUM_ABS, rel=1e-12)
    torch.testing.assert_close(grad, 0.3 * torch.sign(W))


def test_l2_value_and_gradient_have_no_half() -> None:
    value, grad = value_and_grad(L2(0.2), W)
    assert value == pytest.approx(0.2 * SUM_SQUARES, rel=1e-12)
    torch.testing.assert_close(grad, 2 * 0.2 * W)


def test_l1_l2_value_and_gradient() -> None:
    value, grad = value_and_grad(L1L2(l1=0.3, l2=0.2), W)
    assert value == pytest.approx(0.3 * SUM_ABS + 0.2 * SUM_SQUARES, rel=1e-12)
    torch.testing.assert_close(grad, 0.3 * torch.sign(W) + 2 * 0.2 * W)


def test_string_defaults() -> None:
    assert regularizers.get("l1") == L1(0.01)
    assert regularizers.get("l2") == L2(0.01)
    assert regularizers.get("orthogonal") == OrthogonalRegularizer(0.01, "rows")
    assert regularizers.get("l1_l2") == L1L2(0.0, 0.0)


def test_l1_l2_defaults_mirror_keras_code_not_its_docstring() -> None:
    # Keras's L1L2 docstring promises 0.01 for 'l1_l2'; its code gives 0.0 (see our docstring).
    assert keras.regularizers.l1_l2 is keras.regularizers.L1L2
    assert keras.regularizers.L1L2().get_config() == {"l1": 0.0, "l2": 0.0}
    assert keras.regularizers.get("l1l2").get_config() == {"l1": 0.0, "l2": 0.0}
    with pytest.raises(ValueError, match="l1_l2"):
        keras.regularizers.get("l1_l2")
    assert regularizers.get("l1_l2").get_config() == {"l1": 0.0, "l2": 0.0}  # type: ignore[union-attr]
    assert regularizers.get("l1l2") == L1L2()
    assert float(L1L2()(W)) == 0.0


@pytest.mark.parametrize("name", ["l1", "l2"])
def test_keras_string_defaults_agree(name: str) -> None:
    ours = regularizers.get(name)
    assert isinstance(ours, Regularizer)
    # Keras rounds L1's strength to float32.
    assert ours.get_config() == pytest.approx(keras.regularizers.get(name).get_config(), rel=1e-7)


def test_orthogonal_on_hand_matrices() -> None:
    # Keras's "rows" of a torch (out, in) weight are its columns, "columns" its rows.
    orthogonal_columns = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    identical_columns = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    opposite_rows = torch.tensor([[1.0, -2.0], [-1.0, 2.0]])
    assert float(OrthogonalRegularizer(0.5, "rows")(orthogonal_columns)) == pytest.approx(0.0)
    assert float(OrthogonalRegularizer(0.5, "rows")(identical_columns)) == pytest.approx(0.5)
    assert float(OrthogonalRegularizer(0.5, "columns")(opposite_rows)) == pytest.approx(0.5)
    # Rows (1,0), (1,1), (0,1): |cos| = 1/sqrt2, 0, 1/sqrt2 over three pairs.
    three = torch.tensor([[1.0, 0.0], [3.0, 3.0], [0.0, 0.5]], dtype=torch.float64)
    expected = 0.2 * (2 / math.sqrt(2)) / 3
    assert float(OrthogonalRegularizer(0.2, "columns")(three)) == pytest.approx(expected, rel=1e-12)


def test_orthogonal_with_a_single_vector_is_zero_not_nan() -> None:
    value, grad = value_and_grad(OrthogonalRegularizer(1.0, "columns"), W[:1])
    assert value == 0.0
    assert torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("shape", [(3,), (4, 3, 3), (2, 2, 2, 2, 2)])
def test_orthogonal_rejects_other_ranks(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        OrthogonalRegularizer()(torch.ones(shape))


KERAS_PAIRS: list[tuple[Regularizer, Any]] = [
    (L1(0.3), keras.regularizers.L1(0.3)),
    (L2(0.2), keras.regularizers.L2(0.2)),
    (L1L2(0.3, 0.2), keras.regularizers.L1L2(0.3, 0.2)),
    (L1(), keras.regularizers.L1()),
    (L2(), keras.regularizers.L2()),
    (OrthogonalRegularizer(), keras.regularizers.OrthogonalRegularizer()),
    (
        OrthogonalRegularizer(0.7, "columns"),
        keras.regularizers.OrthogonalRegularizer(0.7, "columns"),
    ),
]
CASES = [pytest.param(ours, theirs, id=repr(ours)) for ours, theirs in KERAS_PAIRS]


@pytest.mark.parametrize(("ours", "theirs"), CASES)
@pytest.mark.parametrize("shape", [(5, 4), (4, 2, 3, 3)], ids=["dense", "conv"])
def test_matches_keras_value_and_gradient(
    ours: Regularizer, theirs: Any, shape: tuple[int, ...]
) -> None:
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    value, grad = value_and_grad(ours, weight)
    kernel = keras_layout(weight).detach().clone().requires_grad_(True)
    # Keras's orthogonal penalty only takes rank 2: a conv kernel flattened to (kh*kw*in, out).
    keras_input = (
        kernel.reshape(-1, kernel.shape[-1]) if isinstance(ours, OrthogonalRegularizer) else kernel
    )
    keras_value = theirs(keras_input)
    (keras_grad,) = torch.autograd.grad(keras_value, kernel)
    # Keras keeps l1 and factor as float32 tensors, hence ~1e-7 rather than 1e-15.
    assert value == pytest.approx(float(keras_value.detach()), rel=1e-6)
    back = keras_grad.t() if weight.dim() == 2 else keras_grad.permute(3, 2, 0, 1)
    torch.testing.assert_close(grad, back, rtol=1e-6, atol=1e-6 * float(back.abs().max()))


@pytest.mark.parametrize("identifier", [None, "none", "None"])
def test_none_means_no_regularizer(identifier: str | None) -> None:
    assert regularizers.get(identifier) is None


@pytest.mark.parametrize(
    "regularizer",
    [L1(0.3), L2(2), L1L2(l1=0.1, l2=0.5), OrthogonalRegularizer(0.2, "columns")],
    ids=repr,
)
def test_serialize_json_round_trip(regularizer: Regularizer) -> None:
    config = json.loads(json.dumps(regularizers.serialize(regularizer)))
    rebuilt = regularizers.deserialize(config)
    assert rebuilt == regularizer
    assert regularizers.get(config) == regularizer
    assert float(rebuilt(W)) == float(regularizer(W))


def test_keras_names_and_keras_extra_keys_are_accepted() -> None:
    assert regularizers.get("L2") == L2()
    assert regularizers.get(L2) == L2()  # a class is instantiated, as in Keras
    assert regularizers.get("OrthogonalRegularizer") == OrthogonalRegularizer()
    assert regularizers.get("orthogonal_regularizer") == OrthogonalRegularizer()
    keras_style = {"module": "keras.regularizers", "class_name": "L1", "config": {"l1": 0.5}}
    assert regularizers.get(keras_style) == L1(0.5)
    assert regularizers.serialize(L1(0.5)) == {"class_name": "l1", "config": {"l1": 0.5}}
    assert {"l1", "l1_l2", "l2", "orthogonal"} <= set(regularizers.names())


def test_custom_function_registered_and_round_tripped() -> None:
    name = f"sum_cubes_{uuid.uuid4().hex}"

    @regularizers.register(name)
    def sum_cubes(weights: torch.Tensor) -> torch.Tensor:
        return weights.pow(3).sum()

    assert regularizers.get(name) is sum_cubes
    config = json.loads(json.dumps(regularizers.serialize(sum_cubes)))
    assert config == {"class_name": name, "config": {}}
    assert regularizers.deserialize(config) is sum_cubes
    assert float(regularizers.penalty(regularizers.get(name), [W])) == pytest.approx(
        float(W.pow(3).sum())
    )


def test_custom_class_registered_and_round_tripped() -> None:
    name = f"scaled_max_{uuid.uuid4().hex}"

    @regularizers.register(name)
    class ScaledMax(Regularizer):
        def __init__(self, scale: float = 1.0) -> None:
            self.scale = scale

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return self.scale * x.abs().max()

        def get_config(self) -> dict[str, Any]:
            return {"scale": self.scale}

    config = json.loads(json.dumps(regularizers.serialize(ScaledMax(2.5))))
    assert config == {"class_name": name, "config": {"scale": 2.5}}
    rebuilt = regularizers.deserialize(config)
    assert isinstance(rebuilt, ScaledMax)
    assert float(rebuilt(W)) == 2.5 * 3.0


@pytest.mark.parametrize(
    ("build", "shown"),
    [
        (lambda: L1(-0.1), "l1=-0.1"),
        (lambda: L2(float("nan")), "l2=nan"),
        (lambda: L2(float("inf")), "l2=inf"),
        (lambda: L1L2(l1=0.1, l2="0.1"), "l2='0.1'"),  # type: ignore[arg-type]
        (lambda: L1(True), "l1=True"),
        (lambda: OrthogonalRegularizer(factor=-1), "factor=-1"),
        (lambda: OrthogonalRegularizer(mode="diagonal"), "mode='diagonal'"),
        (lambda: regularizers.get({"class_name": "l2", "config": {"l2": -3}}), "l2=-3"),
        (lambda: regularizers.get({"class_name": "l2", "config": {"l3": 1}}), "l3"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(
    build: Callable[[], object], shown: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(shown)):
        build()


def test_penalty_sums_over_tensors_and_propagates_gradients() -> None:
    a = W.clone().requires_grad_(True)
    b = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    total = regularizers.penalty(L2(0.5), [a, b])
    assert float(total.detach()) == pytest.approx(0.5 * (SUM_SQUARES + 5.0))
    (grad_a, grad_b) = torch.autograd.grad(total, [a, b])
    torch.testing.assert_close(grad_a, W)
    torch.testing.assert_close(grad_b, b.detach())


def test_penalty_of_nothing_is_zero() -> None:
    assert float(regularizers.penalty(None, [W])) == 0.0
    assert regularizers.penalty(None, [W]).dtype == torch.float64
    assert float(regularizers.penalty(L1(), [])) == 0.0

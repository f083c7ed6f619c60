"""Optimizer iterates against Keras 3's update equations (written out here) and Keras itself."""

from __future__ import annotations

import copy
import inspect
import json
import os
import re
from collections.abc import Callable
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np
import pytest
import torch

from trainer import optimizers
from trainer.optimizers import (
    SGD,
    Adam,
    AdamW,
    KerasAdam,
    Momentum,
    Nesterov,
    Optimizer,
    RMSprop,
)

Array = np.ndarray[Any, np.dtype[np.float64]]
#: One Keras update of one weight: (weight, gradient, slots, step t starting at 1) -> new weight.
Step = Callable[[Array, Array, dict[str, Array], int], Array]

#: Two weights (a matrix with a zero entry, a vector) and five steps of varying gradients:
#: different magnitudes, sign flips, a zero gradient.
START = [np.array([[0.5, -1.5, 2.0], [0.0, 1.0, -0.25]]), np.array([3.0, -0.75])]
_rng = np.random.default_rng(1234)
GRADIENTS = [
    [np.array([[0.1, -0.2, 0.3], [0.0, 1.5, -0.05]]), np.array([0.2, -0.4])],
    [np.array([[-0.3, 0.1, 0.3], [0.2, -2.0, 0.0]]), np.array([-0.1, 0.5])],
    *([_rng.normal(size=(2, 3)), _rng.normal(size=2) * 0.01] for _ in range(3)),
]


def keras_sgd(lr: float, momentum: float = 0.0, nesterov: bool = False) -> Step:
    """keras/src/optimizers/sgd.py: v = m*v - lr*g; w += v (nesterov: w += m*v - lr*g)."""

    def step(w: Array, g: Array, s: dict[str, Array], t: int) -> Array:
        if momentum == 0:
            return w - lr * g
        s["v"] = momentum * s.get("v", 0 * w) - lr * g
        return w + (momentum * s["v"] - lr * g if nesterov else s["v"])

    return step


def keras_rmsprop(lr: float, rho: float, momentum: float, epsilon: float, centered: bool) -> Step:
    """keras/src/optimizers/rmsprop.py: epsilon inside the square root."""

    def step(w: Array, g: Array, s: dict[str, Array], t: int) -> Array:
        s["v"] = rho * s.get("v", 0 * w) + (1 - rho) * g**2
        denominator = s["v"]
        if centered:
            s["a"] = rho * s.get("a", 0 * w) + (1 - rho) * g
            denominator = s["v"] - s["a"] ** 2
        increment = lr * g / np.sqrt(denominator + epsilon)
        if momentum > 0:
            s["m"] = momentum * s.get("m", 0 * w) + increment
            return w - s["m"]
        return w - increment

    return step


def keras_adam(
    lr: float,
    beta_1: float,
    beta_2: float,
    epsilon: float,
    amsgrad: bool,
    weight_decay: float = 0.0,
) -> Step:
    """keras/src/optimizers/adam.py, after base_optimizer's decoupled w -= w*wd*lr."""

    def step(w: Array, g: Array, s: dict[str, Array], t: int) -> Array:
        w = w - w * weight_decay * lr
        s["m"] = s.get("m", 0 * w) + (g - s.get("m", 0 * w)) * (1 - beta_1)
        s["v"] = s.get("v", 0 * w) + (g**2 - s.get("v", 0 * w)) * (1 - beta_2)
        v = s["v"]
        if amsgrad:
            s["v_hat"] = v = np.maximum(s.get("v_hat", 0 * w), s["v"])
        alpha = lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        updated: Array = w - s["m"] * alpha / (np.sqrt(v) + epsilon)
        return updated

    return step


def by_hand(step: Step, gradients: list[list[Array]]) -> list[list[Array]]:
    weights = [w.copy() for w in START]
    states: list[dict[str, Array]] = [{} for _ in START]
    history = []
    for t, grads in enumerate(gradients, start=1):
        weights = [step(w, g, s, t) for w, g, s in zip(weights, grads, states, strict=True)]
        history.append(weights)
    return history


def with_trainer(
    factory: Optimizer, gradients: list[list[Array]], dtype: torch.dtype = torch.float64
) -> list[list[Array]]:
    params = [torch.nn.Parameter(torch.tensor(w, dtype=dtype)) for w in START]
    optimizer = factory.build(params)
    history = []
    for grads in gradients:
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.tensor(g, dtype=dtype)
        optimizer.step()
        history.append([p.detach().double().numpy().copy() for p in params])
    return history


def with_keras(
    optimizer: Any, gradients: list[list[Array]], dtype: str = "float64"
) -> list[list[Array]]:
    variables = [keras.Variable(w, dtype=dtype) for w in START]
    history = []
    for grads in gradients:
        pairs = [
            (torch.tensor(g, dtype=getattr(torch, dtype)), v)
            for g, v in zip(grads, variables, strict=True)
        ]
        optimizer.apply_gradients(pairs)
        history.append([v.value.detach().double().numpy().copy() for v in variables])
    return history


def assert_same_steps(
    ours: list[list[Array]], reference: list[list[Array]], rtol: float, atol: float = 0.0
) -> None:
    """Compare displacements from START (not positions, which would hide small steps)."""
    assert len(ours) == len(reference)
    for step, (mine, theirs) in enumerate(zip(ours, reference, strict=True), start=1):
        for w0, a, b in zip(START, mine, theirs, strict=True):
            np.testing.assert_allclose(a - w0, b - w0, rtol=rtol, atol=atol, err_msg=f"step {step}")


# (trainer factory, hand-written Keras equations, Keras optimizer, atol against Keras)
CASES: dict[str, tuple[Optimizer, Step, Callable[[], Any], float]] = {
    "sgd": (SGD(), keras_sgd(0.01), lambda: keras.optimizers.SGD(), 0.0),
    "sgd-nesterov": (
        SGD(0.1, momentum=0.5, nesterov=True),
        keras_sgd(0.1, 0.5, nesterov=True),
        lambda: keras.optimizers.SGD(0.1, momentum=0.5, nesterov=True),
        0.0,
    ),
    "momentum": (
        Momentum(),
        keras_sgd(0.01, 0.9),
        lambda: keras.optimizers.SGD(momentum=0.9),
        0.0,
    ),
    "nesterov": (
        Nesterov(),
        keras_sgd(0.01, 0.9, nesterov=True),
        lambda: keras.optimizers.SGD(momentum=0.9, nesterov=True),
        0.0,
    ),
    "rmsprop": (
        RMSprop(),
        keras_rmsprop(0.001, 0.9, 0.0, 1e-7, False),
        lambda: keras.optimizers.RMSprop(),
        0.0,
    ),
    "rmsprop-centered-momentum": (
        RMSprop(0.01, rho=0.8, momentum=0.5, epsilon=1e-3, centered=True),
        keras_rmsprop(0.01, 0.8, 0.5, 1e-3, True),
        lambda: keras.optimizers.RMSprop(0.01, rho=0.8, momentum=0.5, epsilon=1e-3, centered=True),
        0.0,
    ),
    "adam": (
        Adam(),
        keras_adam(0.001, 0.9, 0.999, 1e-7, False),
        lambda: keras.optimizers.Adam(),
        0.0,
    ),
    "adam-amsgrad": (
        Adam(0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-3, amsgrad=True),
        keras_adam(0.01, 0.8, 0.99, 1e-3, True),
        lambda: keras.optimizers.Adam(0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-3, amsgrad=True),
        0.0,
    ),
    # Keras's torch backend computes the decay factor 1 - wd*lr in float32
    # (keras/src/backend/torch/optimizers/torch_optimizer.py), off by up to ~3e-8 a step.
    "adamw": (
        AdamW(),
        keras_adam(0.001, 0.9, 0.999, 1e-7, False, weight_decay=0.004),
        lambda: keras.optimizers.AdamW(),
        5 * 2.0 * 2.0**-24,
    ),
    # ... so also a case where lr, wd and 1 - wd*lr are exact in float32.
    "adamw-exact-decay-amsgrad": (
        AdamW(2.0**-10, weight_decay=2.0**-5, amsgrad=True),
        keras_adam(2.0**-10, 0.9, 0.999, 1e-7, True, weight_decay=2.0**-5),
        lambda: keras.optimizers.AdamW(2.0**-10, weight_decay=2.0**-5, amsgrad=True),
        0.0,
    ),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("steps", [1, 2, 5])
def test_matches_keras_equations(case: str, steps: int) -> None:
    factory, equations, _, _ = CASES[case]
    expected = by_hand(equations, GRADIENTS[:steps])
    assert_same_steps(with_trainer(factory, GRADIENTS[:steps]), expected, rtol=1e-9)


@pytest.mark.parametrize("case", CASES)
def test_matches_keras_optimizer(case: str) -> None:
    factory, _, make_keras, atol = CASES[case]
    # Keras keeps the learning rate as a float32 variable: ~5e-8 relative.
    expected = with_keras(make_keras(), GRADIENTS)
    assert_same_steps(with_trainer(factory, GRADIENTS), expected, rtol=1e-6, atol=atol)


@pytest.mark.parametrize("case", ["adam", "rmsprop-centered-momentum", "nesterov"])
def test_matches_keras_optimizer_in_float32(case: str) -> None:
    factory, _, make_keras, _ = CASES[case]
    ours = with_trainer(factory, GRADIENTS, dtype=torch.float32)
    expected = with_keras(make_keras(), GRADIENTS, dtype="float32")
    assert_same_steps(ours, expected, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(ours[-1][0], expected[-1][0], rtol=1e-5)


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adam", "adamw"])
def test_cpu_parameters_step_with_torchs_fused_kernel(name: str) -> None:
    """On the CPU the built-ins take torch's fused kernel (torch would step one tensor at a
    time); the parameters may come as a generator, as `model.parameters()` gives them, or as
    param groups holding one tensor, and none is lost on the way."""
    factory = optimizers.get(name)
    weights = [torch.zeros(3, requires_grad=True), torch.zeros(2, 2, requires_grad=True)]
    optimizer = factory.build(weight for weight in weights)
    assert optimizer.defaults["fused"] is True
    assert optimizer.param_groups[0]["params"] == weights
    single = torch.zeros(4, requires_grad=True)
    grouped = factory.build([{"params": single, "lr": 0.5}])
    assert grouped.param_groups[0]["params"] == [single]
    assert grouped.param_groups[0]["lr"] == 0.5
    # a tensor torch's fused kernel would refuse leaves torch's own choice
    assert factory.build([torch.zeros(2, dtype=torch.complex64)]).defaults["fused"] is None


def test_adam_epsilon_placement_matters_for_tiny_gradients() -> None:
    tiny = [[g * 1e-8 for g in grads] for grads in GRADIENTS]
    expected = with_keras(keras.optimizers.Adam(), tiny)
    assert_same_steps(with_trainer(Adam(), tiny), expected, rtol=1e-6)
    assert_same_steps(
        with_trainer(Adam(), tiny),
        by_hand(keras_adam(1e-3, 0.9, 0.999, 1e-7, False), tiny),
        rtol=1e-9,
    )

    class PlainTorchAdam(Adam):
        def build(self, params: Any) -> torch.optim.Optimizer:
            return torch.optim.Adam(params, lr=self.learning_rate, eps=self.epsilon)

    plain = with_trainer(PlainTorchAdam(), tiny)
    step = plain[0][0] - START[0]
    keras_step = expected[0][0] - START[0]
    nonzero = tiny[0][0] != 0
    # eps dominates sqrt(v) here; adding it after bias correction makes torch's steps ~30x longer.
    assert np.all(np.abs(step[nonzero]) > 10 * np.abs(keras_step[nonzero]))


def test_ema_momentum_is_classical_momentum_with_scaled_learning_rate() -> None:
    alpha, beta = 0.1, 0.9
    weights = [w.copy() for w in START]
    velocities = [np.zeros_like(w) for w in START]
    expected = []
    for grads in GRADIENTS:
        velocities = [beta * v + (1 - beta) * g for v, g in zip(velocities, grads, strict=True)]
        weights = [w - alpha * v for w, v in zip(weights, velocities, strict=True)]
        expected.append(weights)
    ours = with_trainer(Momentum(learning_rate=alpha * (1 - beta), momentum=beta), GRADIENTS)
    assert_same_steps(ours, expected, rtol=1e-12)


@pytest.mark.parametrize("case", ["adam", "adamw-exact-decay-amsgrad", "rmsprop-centered-momentum"])
def test_resuming_from_a_state_dict_continues_the_same_iterates(case: str) -> None:
    factory, equations, _, _ = CASES[case]
    params = [torch.nn.Parameter(torch.tensor(w)) for w in START]
    first = factory.build(params)
    for grads in GRADIENTS[:2]:
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.tensor(g)
        first.step()
    resumed = factory.build(params)
    resumed.load_state_dict(copy.deepcopy(first.state_dict()))
    for grads in GRADIENTS[2:]:
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.tensor(g)
        resumed.step()
    expected = by_hand(equations, GRADIENTS)[-1]
    for w0, p, e in zip(START, params, expected, strict=True):
        np.testing.assert_allclose(p.detach().numpy() - w0, e - w0, rtol=1e-9)


def test_nesterov_without_momentum_is_plain_sgd_as_in_keras() -> None:
    expected = by_hand(keras_sgd(0.05), GRADIENTS)
    assert_same_steps(with_trainer(SGD(0.05, nesterov=True), GRADIENTS), expected, rtol=1e-12)
    assert_same_steps(with_trainer(Nesterov(0.05, momentum=0.0), GRADIENTS), expected, rtol=1e-12)


KERAS_CLASSES = {
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
}


@pytest.mark.parametrize("name", KERAS_CLASSES)
def test_defaults_are_keras_defaults(name: str) -> None:
    signature = inspect.signature(KERAS_CLASSES[name].__init__)
    config = optimizers.get(name).get_config()
    assert config == {key: signature.parameters[key].default for key in config}


def test_defaults() -> None:
    assert optimizers.get("sgd").get_config() == {
        "learning_rate": 0.01,
        "momentum": 0.0,
        "nesterov": False,
    }
    assert optimizers.get("momentum").get_config() == {"learning_rate": 0.01, "momentum": 0.9}
    assert optimizers.get("nesterov").get_config() == {"learning_rate": 0.01, "momentum": 0.9}
    assert optimizers.get("rmsprop").get_config() == {
        "learning_rate": 0.001,
        "rho": 0.9,
        "momentum": 0.0,
        "epsilon": 1e-7,
        "centered": False,
    }
    adam = {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}
    assert optimizers.get("adam").get_config() == {**adam, "amsgrad": False}
    assert optimizers.get("adamw").get_config() == {**adam, "weight_decay": 0.004, "amsgrad": False}
    assert {"adam", "adamw", "momentum", "nesterov", "rmsprop", "sgd"} <= set(optimizers.names())


@pytest.mark.parametrize(
    "factory",
    [
        SGD(0.1, momentum=0.5, nesterov=True),
        Momentum(0.2, 0.8),
        Nesterov(0.3, 0.7),
        RMSprop(0.01, rho=0.8, momentum=0.5, epsilon=1e-3, centered=True),
        Adam(0.01, beta_1=0.8, beta_2=0.99, epsilon=0.0, amsgrad=True),
        AdamW(0.01, weight_decay=0.1, amsgrad=True),
    ],
    ids=repr,
)
def test_serialize_json_round_trip(factory: Optimizer) -> None:
    config = json.loads(json.dumps(optimizers.serialize(factory)))
    rebuilt = optimizers.deserialize(config)
    assert rebuilt == factory
    assert rebuilt.get_config() == factory.get_config()
    assert optimizers.get(config) == factory
    assert optimizers.get(factory) is factory
    assert rebuilt.learning_rate == factory.learning_rate


def test_keras_class_names_are_accepted() -> None:
    assert optimizers.get("Adam") == Adam()
    assert optimizers.get(Adam) == Adam()  # a class is instantiated, as in Keras
    assert optimizers.get("RMSprop") == RMSprop()
    assert optimizers.get({"class_name": "AdamW", "config": {"weight_decay": 0.01}}) == AdamW(
        weight_decay=0.01
    )
    assert isinstance(optimizers.get("adam").build([torch.nn.Parameter(torch.ones(1))]), KerasAdam)


@pytest.mark.parametrize(
    ("build", "shown"),
    [
        (lambda: SGD(learning_rate=0), "learning_rate=0"),
        (lambda: SGD(learning_rate=-0.1), "learning_rate=-0.1"),
        (lambda: Adam(learning_rate=float("nan")), "learning_rate=nan"),
        (lambda: Adam(learning_rate=True), "learning_rate=True"),
        (lambda: SGD(momentum=1.0), "momentum=1.0"),
        (lambda: Momentum(momentum=-0.1), "momentum=-0.1"),
        (lambda: SGD(nesterov="yes"), "nesterov='yes'"),  # type: ignore[arg-type]
        (lambda: RMSprop(rho=1.0), "rho=1.0"),
        (lambda: RMSprop(epsilon=-1e-7), "epsilon=-1e-07"),
        (lambda: RMSprop(centered=1), "centered=1"),  # type: ignore[arg-type]
        (lambda: Adam(beta_1=1.0), "beta_1=1.0"),
        (lambda: AdamW(beta_2=-0.5), "beta_2=-0.5"),
        (lambda: AdamW(weight_decay=-0.004), "weight_decay=-0.004"),
        (lambda: optimizers.get({"class_name": "adam", "config": {"beta_2": 2}}), "beta_2=2"),
        (
            lambda: optimizers.get({"class_name": "momentum", "config": {"nesterov": True}}),
            "nesterov",
        ),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(
    build: Callable[[], object], shown: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(shown)):
        build()

"""trainer.initializers: Keras 3 math on torch-layout shapes, checked against Keras itself."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
import keras
import keras.src.initializers as keras_initializers
from keras.src.initializers.random_initializers import (
    compute_fans as keras_compute_fans,
)

from trainer import initializers
from trainer._registry import UnknownIdentifierError
from trainer.initializers import (
    Constant,
    GlorotUniform,
    HeNormal,
    Identity,
    Initializer,
    Ones,
    Orthogonal,
    RandomNormal,
    RandomUniform,
    TruncatedNormal,
    VarianceScaling,
    Zeros,
    compute_fans,
)

TRUNCATED_STDDEV = 0.87962566103423978  # stddev of N(0, 1) truncated to [-2, 2]

# Torch-layout shapes with their fans worked out by hand, and the same layer's Keras shape.
LINEAR = (1000, 500)  # nn.Linear(500, 1000).weight; Keras Dense kernel (500, 1000)
CONV = (256, 128, 3, 3)  # nn.Conv2d(128, 256, 3).weight; Keras Conv2D kernel (3, 3, 128, 256)
FANS = {LINEAR: (500.0, 1000.0), CONV: (128.0 * 9, 256.0 * 9)}
KERAS_SHAPE = {LINEAR: (500, 1000), CONV: (3, 3, 128, 256)}

BUILTINS = [
    "constant",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "identity",
    "lecun_normal",
    "lecun_uniform",
    "ones",
    "orthogonal",
    "random_normal",
    "random_uniform",
    "truncated_normal",
    "variance_scaling",
    "zeros",
]

# (scale, mode, distribution) as Keras's subclasses of VarianceScaling define them.
PRESETS = {
    "glorot_normal": (1.0, "fan_avg", "truncated_normal"),
    "glorot_uniform": (1.0, "fan_avg", "uniform"),
    "he_normal": (2.0, "fan_in", "truncated_normal"),
    "he_uniform": (2.0, "fan_in", "uniform"),
    "lecun_normal": (1.0, "fan_in", "truncated_normal"),
    "lecun_uniform": (1.0, "fan_in", "uniform"),
}
VARIANCE_SCALING_CASES: list[tuple[Any, tuple[float, str, str]]] = [
    *PRESETS.items(),
    *(
        (
            {"class_name": "VarianceScaling", "config": {"scale": s, "mode": m, "distribution": d}},
            (s, m, d),
        )
        for s, m, d in [
            (3.0, "fan_out", "untruncated_normal"),
            (0.5, "fan_avg", "truncated_normal"),
            (2.0, "fan_out", "uniform"),
        ]
    ),
]

# With n >= 3e5 samples the relative standard error of a sample variance is below 0.3%; 3% is
# 10+ standard errors, and a wrong formula (e.g. a missing 0.8796 or a swapped fan) is off by
# 13% or more.
VAR_RTOL = 0.03


def expected_variance(scale: float, mode: str, fans: tuple[float, float]) -> float:
    fan_in, fan_out = fans
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    return scale / fan


def assert_mean_zero(w: torch.Tensor, variance: float) -> None:
    assert abs(w.mean().item()) < 6 * math.sqrt(variance / w.numel())


def keras_sample(initializer: Any, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.as_tensor(initializer(shape)).detach().cpu().double()


@pytest.mark.parametrize("shape", [LINEAR, CONV], ids=["linear", "conv2d"])
@pytest.mark.parametrize(("identifier", "preset"), VARIANCE_SCALING_CASES, ids=str)
def test_variance_scaling_math(
    identifier: Any, preset: tuple[float, str, str], shape: tuple[int, ...]
) -> None:
    scale, mode, distribution = preset
    w = initializers.get(identifier)(shape, torch.float64)
    variance = expected_variance(scale, mode, FANS[shape])
    assert w.shape == shape
    assert_mean_zero(w, variance)
    assert w.var().item() == pytest.approx(variance, rel=VAR_RTOL)
    peak = w.abs().max().item()
    if distribution == "truncated_normal":
        cut = 2 * math.sqrt(variance) / TRUNCATED_STDDEV
        assert peak <= cut
        assert peak > 0.98 * cut  # ~1% of the mass lies in the last 5% before the cut
    elif distribution == "uniform":
        limit = math.sqrt(3 * variance)
        assert peak <= limit
        assert peak > 0.999 * limit
    else:
        assert peak > 3.5 * math.sqrt(variance)  # untruncated: ~2e-4 of the mass is out there


def test_glorot_uniform_limit_is_sqrt_6_over_fan_sum() -> None:
    w = GlorotUniform()(LINEAR, torch.float64)
    limit = math.sqrt(6 / (500 + 1000))
    assert w.abs().max().item() <= limit
    assert w.abs().max().item() == pytest.approx(limit, rel=1e-3)
    assert w.var().item() == pytest.approx(limit**2 / 3, rel=VAR_RTOL)


def test_he_normal_is_not_torch_kaiming_normal() -> None:
    w = HeNormal()(LINEAR, torch.float64)
    kaiming = torch.nn.init.kaiming_normal_(torch.empty(LINEAR, dtype=torch.float64))
    assert w.var().item() == pytest.approx(2 / 500, rel=VAR_RTOL)
    assert kaiming.var().item() == pytest.approx(2 / 500, rel=VAR_RTOL)
    # Same variance, but Keras's is a truncated normal: no value beyond 2/0.8796 stddevs.
    assert w.abs().max().item() <= 2 * math.sqrt(2 / 500) / TRUNCATED_STDDEV
    assert kaiming.abs().max().item() > 3 * math.sqrt(2 / 500)


def test_random_normal_defaults() -> None:
    init = RandomNormal()
    assert init.get_config() == {"seed": None, "mean": 0.0, "stddev": 0.05}
    w = init((1000, 500), torch.float64)
    assert_mean_zero(w, 0.05**2)
    assert w.std().item() == pytest.approx(0.05, rel=VAR_RTOL / 2)
    assert w.abs().max().item() > 0.2  # untruncated: 4+ stddevs occur in 5e5 draws


def test_random_uniform_defaults() -> None:
    init = RandomUniform()
    assert init.get_config() == {"seed": None, "minval": -0.05, "maxval": 0.05}
    w = init((1000, 500), torch.float64)
    assert w.min().item() >= -0.05
    assert w.max().item() < 0.05
    assert w.abs().max().item() > 0.0499
    assert_mean_zero(w, 0.05**2 / 3)
    assert w.var().item() == pytest.approx(0.05**2 / 3, rel=VAR_RTOL)


def test_truncated_normal_defaults_cut_at_two_stddev() -> None:
    init = TruncatedNormal()
    assert init.get_config() == {"seed": None, "mean": 0.0, "stddev": 0.05}
    w = init((1000, 500), torch.float64)
    assert w.abs().max().item() <= 0.1
    assert w.abs().max().item() > 0.098
    assert w.std().item() == pytest.approx(0.05 * TRUNCATED_STDDEV, rel=VAR_RTOL / 2)


def test_truncated_normal_cut_is_around_the_mean() -> None:
    w = TruncatedNormal(mean=3.0, stddev=0.5)((1000, 500), torch.float64)
    assert w.min().item() >= 2.0
    assert w.max().item() <= 4.0
    assert w.mean().item() == pytest.approx(3.0, abs=0.005)


@pytest.mark.parametrize(
    ("shape", "fans"),
    [
        ((300, 200), (200.0, 300.0)),
        ((64, 32, 3, 3), (288.0, 576.0)),
        ((16, 8, 5), (40.0, 80.0)),
        ((8, 4, 3, 3, 3), (108.0, 216.0)),
        ((10,), (10.0, 10.0)),
        ((), (1.0, 1.0)),
    ],
    ids=["linear", "conv2d", "conv1d", "conv3d", "bias", "scalar"],
)
def test_compute_fans(shape: tuple[int, ...], fans: tuple[float, float]) -> None:
    assert compute_fans(shape) == fans


@pytest.mark.parametrize(
    ("torch_shape", "keras_shape"),
    [
        ((300, 200), (200, 300)),
        ((64, 32, 3, 3), (3, 3, 32, 64)),
        ((16, 8, 5), (5, 8, 16)),
        ((8, 4, 3, 3, 3), (3, 3, 3, 4, 8)),
        ((10,), (10,)),
        ((), ()),
    ],
    ids=["dense", "conv2d", "conv1d", "conv3d", "bias", "scalar"],
)
def test_compute_fans_matches_keras_for_the_same_layer(
    torch_shape: tuple[int, ...], keras_shape: tuple[int, ...]
) -> None:
    assert compute_fans(torch_shape) == tuple(float(f) for f in keras_compute_fans(keras_shape))


@pytest.mark.parametrize("shape", [LINEAR, CONV], ids=["linear", "conv2d"])
@pytest.mark.parametrize(
    "name", ["glorot_normal", "glorot_uniform", "he_normal", "he_uniform", "lecun_normal"]
)
def test_sample_variance_matches_keras(name: str, shape: tuple[int, ...]) -> None:
    ours = initializers.get(name)(shape, torch.float64)
    theirs = keras_sample(keras.initializers.get(name), KERAS_SHAPE[shape])
    assert ours.var().item() == pytest.approx(theirs.var().item(), rel=VAR_RTOL)
    if PRESETS[name][2] == "uniform":
        assert ours.abs().max().item() == pytest.approx(theirs.abs().max().item(), rel=1e-3)


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (5, 3)])
def test_identity_is_scaled_eye_like_keras(shape: tuple[int, int]) -> None:
    w = Identity(gain=2.5)(shape)
    assert torch.equal(w, 2.5 * torch.eye(*shape))
    keras_w = keras_sample(keras.initializers.Identity(gain=2.5), (shape[1], shape[0]))
    assert torch.equal(w.double(), keras_w.T)


@pytest.mark.parametrize("shape", [(3,), (2, 2, 2)])
def test_identity_rejects_non_2d(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="2-D"):
        Identity()(shape)


def orthonormal_gram(flat: torch.Tensor) -> torch.Tensor:
    """Gram matrix of the smaller side, which an orthogonal init makes `gain**2 * I`."""
    return flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat


@pytest.mark.parametrize("gain", [1.0, 2.0])
@pytest.mark.parametrize(
    "shape", [(64, 64), (32, 128), (128, 32), (16, 8, 3, 3), (128, 4, 3, 3)], ids=str
)
def test_orthogonal(shape: tuple[int, ...], gain: float) -> None:
    w = Orthogonal(gain=gain)(shape)
    flat = w.reshape(shape[0], -1)
    size = min(flat.shape)
    torch.testing.assert_close(orthonormal_gram(flat), gain**2 * torch.eye(size), atol=1e-5, rtol=0)
    # Keras's kernel for the same layer, flattened its way and transposed to ours, is
    # orthonormal on the same side.
    keras_shape = (*shape[2:], shape[1], shape[0])
    keras_w = keras_sample(keras.initializers.Orthogonal(gain=gain), keras_shape)
    keras_flat = keras_w.reshape(-1, shape[0]).T
    torch.testing.assert_close(
        orthonormal_gram(keras_flat),
        gain**2 * torch.eye(size, dtype=torch.float64),
        atol=1e-4,
        rtol=0,
    )


def test_orthogonal_rejects_1d() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        Orthogonal()((5,))


def test_constant_initializers_are_exact() -> None:
    assert torch.equal(Zeros()((3, 4)), torch.zeros(3, 4))
    assert torch.equal(Ones()((3, 4)), torch.ones(3, 4))
    assert torch.equal(Constant(2.5)((3, 4)), torch.full((3, 4), 2.5))
    assert torch.equal(Constant()((2,)), torch.zeros(2))
    assert torch.equal(Constant(7)((2, 2), torch.int64), torch.full((2, 2), 7))
    assert initializers.get("constant").get_config() == {"value": 0.0}


def test_builtins_are_registered_under_keras_names() -> None:
    assert set(BUILTINS) <= set(initializers.names())
    assert all(name in keras_initializers.ALL_OBJECTS_DICT for name in BUILTINS)


@pytest.mark.parametrize("name", BUILTINS)
def test_default_dtype_cpu_and_shape(name: str) -> None:
    init = initializers.get(name)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        w = init((6, 4))
    finally:
        torch.set_default_dtype(previous)
    assert (w.shape, w.dtype, w.device.type) == ((6, 4), torch.float64, "cpu")
    assert not w.requires_grad
    assert init((6, 4), torch.bfloat16).dtype == torch.bfloat16


def test_random_initializers_need_a_floating_dtype() -> None:
    with pytest.raises(ValueError, match="floating dtype"):
        HeNormal()((3, 3), torch.int64)


@pytest.mark.parametrize("make", [RandomNormal, TruncatedNormal, HeNormal, Orthogonal])
def test_seeded_initializer_repeats_itself_like_keras(make: type[Any]) -> None:
    name = initializers.serialize(make())["class_name"]
    state = torch.get_rng_state()
    first = make(seed=42)((20, 10))
    assert torch.equal(first, make(seed=42)((20, 10)))
    init = make(seed=42)
    assert torch.equal(init((20, 10)), init((20, 10)))
    assert not torch.equal(first, make(seed=43)((20, 10)))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    keras_init = keras.initializers.get({"class_name": name, "config": {"seed": 42}})
    assert torch.equal(keras_sample(keras_init, (10, 20)), keras_sample(keras_init, (10, 20)))


def test_unseeded_initializer_follows_torch_manual_seed() -> None:
    init = HeNormal()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        first, second = init((20, 10)), init((20, 10))
        torch.manual_seed(0)
        assert torch.equal(init((20, 10)), first)
    assert not torch.equal(first, second)


def test_invalid_seed() -> None:
    with pytest.raises(ValueError, match="seed"):
        HeNormal(seed="7")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("identifier", "cls"),
    [
        ("he_normal", HeNormal),
        ("HeNormal", HeNormal),
        ("glorot_uniform", GlorotUniform),
        ("normal", RandomNormal),
        ("uniform", RandomUniform),
        ("zero", Zeros),
        ("one", Ones),
        ("OrthogonalInitializer", Orthogonal),
        ("IdentityInitializer", Identity),
    ],
)
def test_get_by_name_and_keras_alias(identifier: str, cls: type[Initializer]) -> None:
    assert type(initializers.get(identifier)) is cls


def test_get_from_dict() -> None:
    init = initializers.get(
        {
            "class_name": "VarianceScaling",
            "config": {"scale": 2.0, "mode": "fan_out", "distribution": "uniform"},
        }
    )
    assert isinstance(init, VarianceScaling)
    assert (init.scale, init.mode, init.distribution, init.seed) == (
        2.0,
        "fan_out",
        "uniform",
        None,
    )
    assert initializers.get(init) is init


def test_serialize_uses_the_snake_name() -> None:
    assert initializers.serialize(HeNormal(seed=3)) == {
        "class_name": "he_normal",
        "config": {"seed": 3},
    }


CONFIGURED = [
    VarianceScaling(scale=2.0, mode="fan_out", distribution="uniform", seed=4),
    RandomNormal(mean=1.0, stddev=2.0, seed=7),
    RandomUniform(minval=-1.0, maxval=3.0, seed=2),
    TruncatedNormal(mean=0.5, stddev=0.1, seed=1),
    Orthogonal(gain=2.0, seed=5),
    Identity(gain=0.5),
    Constant(3.5),
    HeNormal(seed=9),
]


@pytest.mark.parametrize(
    "init", [*(initializers.get(name) for name in BUILTINS), *CONFIGURED], ids=repr
)
def test_json_round_trip(init: Initializer) -> None:
    restored = initializers.deserialize(json.loads(json.dumps(initializers.serialize(init))))
    assert type(restored) is type(init)
    assert restored.get_config() == init.get_config()
    if getattr(init, "seed", None) is not None or isinstance(init, (Constant, Identity)):
        assert torch.equal(restored((8, 6)), init((8, 6)))


# Keras's Identity has no get_config, so its serialized form drops `gain`.
@pytest.mark.parametrize("init", [i for i in CONFIGURED if not isinstance(i, Identity)], ids=repr)
def test_config_is_keras_compatible_both_ways(init: Initializer) -> None:
    ours = initializers.serialize(init)
    keras_init = keras.initializers.deserialize(ours)
    keras_config = keras_init.get_config()
    assert {key: keras_config[key] for key in ours["config"]} == ours["config"]
    restored = initializers.deserialize(keras.initializers.serialize(keras_init))
    assert type(restored) is type(init)
    assert restored.get_config() == init.get_config()


def test_keras_axes_other_than_default_are_rejected() -> None:
    config = {"class_name": "HeNormal", "config": {"seed": None, "input_axes": [0]}}
    with pytest.raises(ValueError, match="input_axes"):
        initializers.deserialize(config)


def test_unknown_name_suggests_the_close_one() -> None:
    with pytest.raises(UnknownIdentifierError, match="did you mean 'he_normal'"):
        initializers.get("he_nromal")


@pytest.mark.parametrize(
    ("config", "bad"),
    [
        ({"mode": "fan_sideways"}, "fan_sideways"),
        ({"distribution": "cauchy"}, "cauchy"),
        ({"scale": 0.0}, "0.0"),
        ({"scale": -1.0}, "-1.0"),
    ],
)
def test_variance_scaling_validation(config: dict[str, Any], bad: str) -> None:
    with pytest.raises(ValueError, match=bad) as direct:
        VarianceScaling(**config)
    assert "expected one of" in str(direct.value) or "positive" in str(direct.value)
    with pytest.raises(ValueError, match=bad):
        initializers.get({"class_name": "variance_scaling", "config": config})


def test_variance_scaling_accepts_keras_normal_alias() -> None:
    assert VarianceScaling(distribution="Normal").distribution == "truncated_normal"


@initializers.register("test_custom_fn_init")
def custom_fn_init(shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.full(shape, 0.25, dtype=dtype)


@initializers.register("test_custom_class_init")
class CustomClassInit(Initializer):
    def __init__(self, value: float = 1.0) -> None:
        self.value = value

    def __call__(self, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.arange(math.prod(shape), dtype=dtype).reshape(shape) * self.value

    def get_config(self) -> dict[str, Any]:
        return {"value": self.value}


def test_custom_function_initializer() -> None:
    assert "test_custom_fn_init" in initializers.names()
    init = initializers.get("test_custom_fn_init")
    assert init is custom_fn_init
    assert torch.equal(init((2, 3)), torch.full((2, 3), 0.25))
    config = json.loads(json.dumps(initializers.serialize(init)))
    assert config == {"class_name": "test_custom_fn_init", "config": {}}
    assert initializers.deserialize(config) is custom_fn_init


def test_custom_class_initializer() -> None:
    init = initializers.get({"class_name": "test_custom_class_init", "config": {"value": 2.0}})
    assert type(init) is CustomClassInit
    assert type(initializers.get("CustomClassInit")) is CustomClassInit
    assert torch.equal(init((2, 2)), torch.tensor([[0.0, 2.0], [4.0, 6.0]]))
    config = json.loads(json.dumps(initializers.serialize(init)))
    assert config == {"class_name": "test_custom_class_init", "config": {"value": 2.0}}
    restored = initializers.deserialize(config)
    assert torch.equal(restored((2, 2)), init((2, 2)))


def test_registering_a_taken_name_raises() -> None:
    def other(shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.zeros(shape, dtype=dtype)

    with pytest.raises(ValueError, match="already registered"):
        initializers.register("test_custom_fn_init")(other)
    with pytest.raises(ValueError, match="already registered"):
        initializers.register("he_normal")(other)
    assert initializers.get("test_custom_fn_init") is custom_fn_init
    initializers.register("test_custom_fn_init")(custom_fn_init)  # the same object again is fine

"""Keras 3 weight initializers on PyTorch tensors, resolvable by name from a study spec.

Names, defaults and math follow `keras.initializers` (keras/src/initializers/), so a spec
written in Keras vocabulary means the same thing here. Notably:

- The `*_normal` variance-scaling initializers (`he_normal`, `glorot_normal`, `lecun_normal`)
  draw a TRUNCATED normal with stddev `sqrt(scale / fan) / 0.87962566103423978`, cut at ±2 of
  that stddev, so the variance after truncation is `scale / fan`; torch's `kaiming_normal_`
  and `xavier_normal_` draw an untruncated normal with stddev `sqrt(scale / fan)`, which is
  `VarianceScaling(distribution="untruncated_normal")` here. Out-of-range values are re-drawn
  exactly (`torch.nn.init.trunc_normal_`), while Keras's torch backend keeps the first of 4
  candidates, letting a few values per million past the cut.
- `shape` is in torch layout: `(out, in)` for a `Linear` weight, `(out, in, *kernel)` for a
  convolution, `(out,)` for a bias. `compute_fans` gives the fans Keras computes for the same
  layer from its own layout (`(in, out)`, `(*kernel, in, out)`), so `he_normal` means the same
  for a `Linear` as for a Keras `Dense`, and `orthogonal` is orthonormal on the same side.
- An int seed gives the same tensor on every call, as in Keras (a fresh local
  `torch.Generator`; the global RNG is untouched). With `seed=None` every call draws from
  torch's global RNG, which the trainer seeds per trial; Keras instead fixes a random seed when
  an unseeded initializer is built, so its calls repeat each other.
- Results are new CPU tensors of `dtype` (default `torch.get_default_dtype()`), which the
  caller copies into the parameter.

A custom initializer is a function registered under the name a spec will use::

    @register("my_init")
    def my_init(shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.full(shape, 0.1, dtype=dtype)

or a class (usually an `Initializer` subclass) with `__call__(shape, dtype)` and
`get_config()`, decorated the same way; `from_config(config)` defaults to `cls(**config)`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

import torch

from trainer._registry import Registry

__all__ = [
    "Constant",
    "GlorotNormal",
    "GlorotUniform",
    "HeNormal",
    "HeUniform",
    "Identity",
    "Initializer",
    "LecunNormal",
    "LecunUniform",
    "Ones",
    "Orthogonal",
    "RandomNormal",
    "RandomUniform",
    "TruncatedNormal",
    "VarianceScaling",
    "Zeros",
    "compute_fans",
    "deserialize",
    "get",
    "names",
    "register",
    "registry",
    "serialize",
]

_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")
#: Stddev of a standard normal truncated to [-2, 2].
_TRUNCATED_STDDEV = 0.87962566103423978


class Initializer:
    """Base class: `init(shape, dtype)` returns a new tensor of that shape and dtype."""

    def __call__(self, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__")

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({args})"


registry: Registry[Initializer] = Registry("initializer")
register = registry.register
get = registry.get
serialize = registry.serialize
deserialize = registry.deserialize
names = registry.names


def compute_fans(shape: Sequence[int]) -> tuple[float, float]:
    """`(fan_in, fan_out)` of a torch-layout weight shape, as Keras computes them for that layer.

    `(out, in)` → `(in, out)`; `(out, in, *kernel)` → `(in * prod(kernel), out * prod(kernel))`;
    a 1-D `(n,)` → `(n, n)` and a scalar `()` → `(1, 1)`, as in Keras.
    """
    dims = tuple(int(dim) for dim in shape)
    if not dims:
        return 1.0, 1.0
    if len(dims) == 1:
        return float(dims[0]), float(dims[0])
    receptive_field = math.prod(dims[2:])
    return float(dims[1] * receptive_field), float(dims[0] * receptive_field)


class _RandomInitializer(Initializer):
    def __init__(self, seed: int | None = None) -> None:
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an int or None, not {seed!r}")
        self.seed = seed

    def __call__(self, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = dtype or torch.get_default_dtype()
        if not dtype.is_floating_point:
            raise ValueError(f"random initializers need a floating dtype, not {dtype}")
        # Half-precision draws (inverse CDF, QR) are computed in float32, then rounded.
        work_dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
        out = torch.empty(tuple(shape), dtype=work_dtype, device="cpu")
        self._fill(out, None if self.seed is None else torch.Generator().manual_seed(self.seed))
        return out.to(dtype)

    def _fill(self, out: torch.Tensor, generator: torch.Generator | None) -> None:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {"seed": self.seed}


def _truncated_normal_(
    out: torch.Tensor, mean: float, stddev: float, generator: torch.Generator | None
) -> None:
    low, high = mean - 2.0 * stddev, mean + 2.0 * stddev
    torch.nn.init.trunc_normal_(out, mean, stddev, low, high, generator)


class _MeanStddev(_RandomInitializer):
    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None) -> None:
        super().__init__(seed)
        self.mean, self.stddev = mean, stddev

    def get_config(self) -> dict[str, Any]:
        return {"seed": self.seed, "mean": self.mean, "stddev": self.stddev}


@register("random_normal", aliases=("normal",))
class RandomNormal(_MeanStddev):
    def _fill(self, out: torch.Tensor, generator: torch.Generator | None) -> None:
        out.normal_(self.mean, self.stddev, generator=generator)


@register("truncated_normal")
class TruncatedNormal(_MeanStddev):
    """Normal(mean, stddev) with values more than 2 stddev from the mean re-drawn."""

    def _fill(self, out: torch.Tensor, generator: torch.Generator | None) -> None:
        _truncated_normal_(out, self.mean, self.stddev, generator)


@register("random_uniform", aliases=("uniform",))
class RandomUniform(_RandomInitializer):
    def __init__(
        self, minval: float = -0.05, maxval: float = 0.05, seed: int | None = None
    ) -> None:
        super().__init__(seed)
        self.minval, self.maxval = minval, maxval

    def _fill(self, out: torch.Tensor, generator: torch.Generator | None) -> None:
        out.uniform_(self.minval, self.maxval, generator=generator)

    def get_config(self) -> dict[str, Any]:
        return {"seed": self.seed, "minval": self.minval, "maxval": self.maxval}


@register("variance_scaling")
class VarianceScaling(_RandomInitializer):
    """Variance `scale / fan` (fan by `mode`, see `compute_fans`), Keras's `VarianceScaling`."""

    def __init__(
        self,
        scale: float = 1.0,
        mode: str = "fan_in",
        distribution: str = "truncated_normal",
        seed: int | None = None,
    ) -> None:
        if not scale > 0.0:
            raise ValueError(f"scale must be a positive float, not {scale!r}")
        if mode not in _MODES:
            raise ValueError(f"invalid mode {mode!r}; expected one of {', '.join(_MODES)}")
        distribution = distribution.lower() if isinstance(distribution, str) else distribution
        if distribution == "normal":  # Keras's alias
            distribution = "truncated_normal"
        if distribution not in _DISTRIBUTIONS:
            allowed = ", ".join(_DISTRIBUTIONS)
            raise ValueError(f"invalid distribution {distribution!r}; expected one of {allowed}")
        super().__init__(seed)
        self.scale, self.mode, self.distribution = scale, mode, distribution

    def _fill(self, out: torch.Tensor, generator: torch.Generator | None) -> None:
        fan_in, fan_out = compute_fans(out.shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}
        variance = self.scale / max(1.0, fan[self.mode])
        if self.distribution == "truncated_normal":
            _truncated_normal_(out, 0.0, math.sqrt(variance) / _TRUNCATED_STDDEV, generator)
        elif self.distribution == "untruncated_normal":
            out.normal_(0.0, math.sqrt(variance), generator=generator)
        else:
            limit = math.sqrt(3.0 * variance)
            out.uniform_(-limit, limit, generator=generator)

    def get_config(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "scale": self.scale,
            "mode": self.mode,
            "distribution": self.distribution,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        # Recent Keras writes input_axes/output_axes (axes of ITS layout): accept only the default.
        params = dict(config)
        for key in ("input_axes", "output_axes"):
            if params.pop(key, None) is not None:
                raise ValueError(f"{cls.__name__}: {key} is not supported (torch layout)")
        return cls(**params)


class _PresetVarianceScaling(VarianceScaling):
    _preset: ClassVar[tuple[float, str, str]]

    def __init__(self, seed: int | None = None) -> None:
        scale, mode, distribution = self._preset
        super().__init__(scale, mode, distribution, seed)

    def get_config(self) -> dict[str, Any]:
        return {"seed": self.seed}


@register("glorot_normal")
class GlorotNormal(_PresetVarianceScaling):
    _preset = (1.0, "fan_avg", "truncated_normal")


@register("glorot_uniform")
class GlorotUniform(_PresetVarianceScaling):
    _preset = (1.0, "fan_avg", "uniform")


@register("he_normal")
class HeNormal(_PresetVarianceScaling):
    _preset = (2.0, "fan_in", "truncated_normal")


@register("he_uniform")
class HeUniform(_PresetVarianceScaling):
    _preset = (2.0, "fan_in", "uniform")


@register("lecun_normal")
class LecunNormal(_PresetVarianceScaling):
    _preset = (1.0, "fan_in", "truncated_normal")


@register("lecun_uniform")
class LecunUniform(_PresetVarianceScaling):
    _preset = (1.0, "fan_in", "uniform")


@register("zeros", aliases=("zero",))
class Zeros(Initializer):
    def __call__(self, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.zeros(tuple(shape), dtype=dtype or torch.get_default_dtype(), device="cpu")


@register("ones", aliases=("one",))
class Ones(Initializer):
    def __call__(self, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.ones(tuple(shape), dtype=dtype or torch.get_default_dtype(), device="cpu")


@register("constant")
class Constant(Initializer):
    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    def __call__(self, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = dtype or torch.get_default_dtype()
        return torch.full(tuple(shape), self.value, dtype=dtype, device="cpu")

    def get_config(self) -> dict[str, Any]:
        return {"value": self.value}


@register("identity", aliases=("IdentityInitializer",))
class Identity(Initializer):
    """`gain * eye(rows, cols)` for a 2-D shape (ones on the main diagonal if not square)."""

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = gain

    def __call__(self, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        if len(shape) != 2:
            raise ValueError(f"identity initializer needs a 2-D shape, got {tuple(shape)}")
        dtype = dtype or torch.get_default_dtype()
        return self.gain * torch.eye(shape[0], shape[1], dtype=dtype, device="cpu")

    def get_config(self) -> dict[str, Any]:
        return {"gain": self.gain}


@register("orthogonal", aliases=("OrthogonalInitializer",))
class Orthogonal(_RandomInitializer):
    """`gain` times a random orthogonal matrix, flattened as `(out, in * prod(kernel))`.

    That is Keras's `(prod(kernel) * in, out)` transposed, so the same side is orthonormal.
    """

    def __init__(self, gain: float = 1.0, seed: int | None = None) -> None:
        super().__init__(seed)
        self.gain = gain

    def __call__(self, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        if len(shape) < 2:
            raise ValueError(f"orthogonal initializer needs at least 2 dimensions, got {shape}")
        return super().__call__(shape, dtype)

    def _fill(self, out: torch.Tensor, generator: torch.Generator | None) -> None:
        torch.nn.init.orthogonal_(out, self.gain, generator)

    def get_config(self) -> dict[str, Any]:
        return {"seed": self.seed, "gain": self.gain}

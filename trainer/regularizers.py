"""Weight and activity regularizers with Keras 3's names, defaults and formulas.

A regularizer maps a tensor to a scalar penalty that is added to the training loss:

- ``l1`` = ``L1(l1=0.01)``: ``l1 * sum(|w|)``
- ``l2`` = ``L2(l2=0.01)``: ``l2 * sum(w**2)`` (no 1/2 factor, unlike textbook weight decay)
- ``l1_l2`` = ``L1L2(l1=0.0, l2=0.0)``: ``l1 * sum(|w|) + l2 * sum(w**2)``
- ``orthogonal`` = ``OrthogonalRegularizer(factor=0.01, mode="rows")``:
  ``factor * mean(|cos(u_i, u_j)|)`` over the distinct pairs ``i < j`` of the rows (or columns)
  ``u`` of the kernel *in Keras layout*; Keras writes it ``factor * 0.5 * sum|offdiag(U U^T)| /
  (n (n - 1) / 2)`` with ``U`` the L2-normalized rows.

``l1_l2`` defaults: Keras's ``L1L2`` docstring says the string ``'l1_l2'`` means ``l1=l2=0.01``
(Keras 2's ``l1_l2`` helper), but Keras 3's code says otherwise: ``keras.regularizers.l1_l2`` is
the ``L1L2`` class itself, whose defaults are 0.0 (kept for backward compatibility, see the
comment in ``keras/src/regularizers/regularizers.py``), ``keras.regularizers.get('l1l2')`` builds
``L1L2()`` with both at 0.0 and ``get('l1_l2')`` raises. We mirror the code: ``"l1_l2"`` (alias
``"l1l2"``) is ``L1L2()`` with both strengths 0.0, so give them explicitly, e.g.
``{"class_name": "l1_l2", "config": {"l1": 0.01, "l2": 0.01}}``.

Weight layout: weights arrive in torch layout (``nn.Linear.weight`` is ``(out, in)``, a conv
weight ``(out, in, kh, kw)``) while Keras kernels are ``(in, out)`` and ``(kh, kw, in, out)``.
Only the orthogonal penalty depends on the layout; it converts to Keras layout first so it gives
the value Keras gives for the same layer (Keras's "rows" are the columns of a torch weight). Keras
only accepts rank-2 kernels there; we also accept a 4-D conv weight, read as Keras's conv kernel
``(kh, kw, in, out)`` flattened to ``(kh * kw * in, out)``.

How the training module applies them, as Keras layers do: a kernel (bias) regularizer's penalty
on each layer's weight (bias) is added to the loss of every training step; an activity
regularizer's penalty on a layer's output is divided by the batch size (``output.shape[0]``)
before it is added, as Keras 3.14+ does in ``Layer.__call__``. That division happens in the
training module, not here: ``regularizer(x)`` is always the plain penalty.

Custom regularizers: any function ``(weights) -> scalar tensor`` decorated with
``@register("name")``, or a class (ideally a ``Regularizer`` subclass) with ``__call__`` and
``get_config`` decorated the same way; a study spec can then name it like a built-in.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import reduce
from typing import Any, Self

import torch

from trainer._registry import Registry

__all__ = [
    "L1",
    "L1L2",
    "L2",
    "OrthogonalRegularizer",
    "Regularizer",
    "RegularizerLike",
    "deserialize",
    "get",
    "keras_kernel_layout",
    "names",
    "penalty",
    "register",
    "registry",
    "serialize",
]

#: What `get` returns: a `Regularizer` or a registered plain function.
RegularizerLike = Callable[[torch.Tensor], torch.Tensor]

registry: Registry[RegularizerLike] = Registry("regularizer")
register = registry.register
serialize = registry.serialize
deserialize = registry.deserialize
names = registry.names


def get(identifier: Any) -> RegularizerLike | None:
    """Like `Registry.get`, but ``None`` and ``"none"`` mean "no regularizer" (Keras: None)."""
    if identifier is None or (isinstance(identifier, str) and identifier.lower() == "none"):
        return None
    return registry.get(identifier)


def penalty(regularizer: RegularizerLike | None, weights: Iterable[torch.Tensor]) -> torch.Tensor:
    """The sum of `regularizer` over `weights`; a zero scalar when it is None or there are none."""
    tensors = list(weights)
    if not tensors:
        return torch.zeros(())
    if regularizer is None:
        return tensors[0].new_zeros(())
    return reduce(torch.add, (regularizer(w) for w in tensors))


def _strength(name: str, value: object) -> float:
    # Keras's validate_float_arg: a finite number >= 0 (we also refuse bools).
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a finite number >= 0, got {name}={value!r}")
    return float(value)


class Regularizer(abc.ABC):
    """Base class: ``regularizer(x)`` is a differentiable scalar penalty on tensor ``x``."""

    @abc.abstractmethod
    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-serializable (what `serialize` writes)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement get_config()")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        return cls(**config)


@register("l1")
@dataclass
class L1(Regularizer):
    """``l1 * sum(|x|)``; gradient ``l1 * sign(x)``."""

    l1: float = 0.01

    def __post_init__(self) -> None:
        self.l1 = _strength("l1", self.l1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.l1 * x.abs().sum()

    def get_config(self) -> dict[str, Any]:
        return {"l1": self.l1}


@register("l2")
@dataclass
class L2(Regularizer):
    """``l2 * sum(x**2)``; gradient ``2 * l2 * x``."""

    l2: float = 0.01

    def __post_init__(self) -> None:
        self.l2 = _strength("l2", self.l2)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2 * x.square().sum()

    def get_config(self) -> dict[str, Any]:
        return {"l2": self.l2}


@register("l1_l2", aliases=("l1l2",))
@dataclass
class L1L2(Regularizer):
    """``l1 * sum(|x|) + l2 * sum(x**2)``; both default to 0.0 as in Keras (module docstring)."""

    l1: float = 0.0
    l2: float = 0.0

    def __post_init__(self) -> None:
        self.l1 = _strength("l1", self.l1)
        self.l2 = _strength("l2", self.l2)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.l1 * x.abs().sum() + self.l2 * x.square().sum()

    def get_config(self) -> dict[str, Any]:
        return {"l1": self.l1, "l2": self.l2}


#: Keras's `ops.normalize` clamps the norm at `backend.epsilon()`.
_NORMALIZE_EPSILON = 1e-7


def keras_kernel_layout(weight: torch.Tensor) -> torch.Tensor:
    """A torch weight as the rank-2 Keras kernel of the same layer.

    ``(out, in)`` -> ``(in, out)``; ``(out, in, kh, kw)`` -> ``(kh, kw, in, out)`` flattened to
    ``(kh * kw * in, out)``. Any other rank raises ValueError.
    """
    if weight.dim() == 2:
        return weight.t()
    if weight.dim() == 4:
        return weight.permute(2, 3, 1, 0).reshape(-1, weight.shape[0])
    raise ValueError(
        "OrthogonalRegularizer needs a 2-D (out, in) or 4-D (out, in, kh, kw) weight, "
        f"got shape {tuple(weight.shape)}"
    )


@register("orthogonal", aliases=("orthogonal_regularizer",))
@dataclass
class OrthogonalRegularizer(Regularizer):
    """``factor`` times the mean ``|cosine|`` between distinct rows (or columns) of the kernel.

    Rows and columns are those of the Keras kernel (see `keras_kernel_layout`): for a Dense
    layer, ``"rows"`` compares the input features' weight vectors, ``"columns"`` the units'.
    With fewer than two vectors there is no pair and the penalty is 0 (Keras divides 0 by 0).
    """

    factor: float = 0.01
    mode: str = "rows"

    def __post_init__(self) -> None:
        self.factor = _strength("factor", self.factor)
        if self.mode not in ("rows", "columns"):
            raise ValueError(f"mode must be 'rows' or 'columns', got mode={self.mode!r}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        kernel = keras_kernel_layout(x)
        vectors = kernel if self.mode == "rows" else kernel.t()
        size = vectors.shape[0]
        if size < 2:
            return x.sum() * 0.0
        unit = torch.nn.functional.normalize(vectors, dim=1, eps=_NORMALIZE_EPSILON)
        product = unit @ unit.t()
        diagonal = torch.eye(size, dtype=torch.bool, device=product.device)
        off_diagonal = product.masked_fill(diagonal, 0.0).abs().sum()
        num_pairs = size * (size - 1) / 2.0
        return self.factor * 0.5 * off_diagonal / num_pairs

    def get_config(self) -> dict[str, Any]:
        return {"factor": self.factor, "mode": self.mode}

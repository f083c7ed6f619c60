"""What a model or dataset plugin provides: the two contracts, as Protocols.

An operator installs a package that declares entry points in the groups `hpsearch.models` and
`hpsearch.datasets` (also `hpsearch.initializers`, `hpsearch.regularizers`); a study spec names
the entry point, never code or a path. The built-in `mlp`, `cnn`, `digits`, `synthetic`, `csv`
and `npz` follow the same contracts (see `trainer.networks` and `trainer.datasets`).

Model: a callable `build(input_shape, n_outputs, **config) -> torch.nn.Module`.
    input_shape is one sample's shape without the batch axis: `(features,)` for flat inputs,
    `(channels, height, width)` for images; n_outputs is the number of classes
    (classification: the module returns logits) or of target columns (regression).
    Optional attributes of the callable:
      `config_schema`: a pydantic model class; the spec's `model.config` is validated with it
        at submit (422 with the JSON path) and what it dumps is what `build` receives.
      `input_kind`: "flat" (default: inputs are flattened to `(features,)`), "image" (the data
        must be `(channels, height, width)`) or "any" (as the dataset gives them).
    Optional method of the returned module:
      `kernel_layers()`: the layers whose `weight` (kernel) and `bias` take the spec's
        initializers and regularizers; default: every `Linear` and `Conv1d/2d/3d`.
      `activity_layers()`: the modules whose outputs the activity regularizer penalizes;
        default: every kernel layer but the last (the output layer).
    When the search space or `fixed` sets `dropout`, `build` receives it in `config`.

Dataset: a callable `load(**config)` returning numpy arrays `(X, y)`; the service splits,
    standardizes and folds them as it does an uploaded file. Classification labels may be any
    integers or strings (they are encoded 0..k-1); regression targets are floats, `(n,)` or
    `(n, k)`. Optional attributes of the callable:
      `config_schema`: a pydantic model class validating `dataset.config`, as for models.
      `task`: "classification" or "regression" (or a function of the validated config
        returning one). Absent: integer, boolean or string labels are classification, float
        targets regression. A spec's `dataset.task` overrides both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
    from torch import nn

Task = Literal["classification", "regression"]
TASKS: tuple[Task, ...] = ("classification", "regression")
InputKind = Literal["flat", "image", "any"]


class ModelBuilder(Protocol):
    """`build(input_shape, n_outputs, **config) -> nn.Module` (see the module docstring)."""

    def __call__(
        self, input_shape: tuple[int, ...], n_outputs: int, **config: Any
    ) -> nn.Module: ...


class DatasetLoader(Protocol):
    """`load(**config) -> (X, y)` numpy arrays (see the module docstring)."""

    def __call__(self, **config: Any) -> tuple[NDArray[np.generic], NDArray[np.generic]]: ...

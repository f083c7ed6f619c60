"""hpsearch's trainer: one trial from a configuration, Keras vocabulary on PyTorch Lightning.

Pure training: knows nothing of HTTP, SQL or Optuna. The service uses only the names below
(import-linter holds it to that).
Torch and Lightning are imported on first use of a name that needs them, so validating a spec
(`TrialTemplate`, `SearchSpace`) stays fast for the API.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainer.callbacks import Reporter
    from trainer.config import (
        BASE_SEED_MAX,
        CheckpointConfig,
        DatasetConfig,
        DiagnosisConfig,
        EarlyStoppingConfig,
        MaxEpochs,
        ModelConfig,
        Seed,
        TrialConfig,
    )
    from trainer.contracts import TASKS, DatasetLoader, ModelBuilder
    from trainer.data import DatasetError, load_splits
    from trainer.datasets import FILE_DATASETS, declared_shape
    from trainer.diagnosis import Diagnosis
    from trainer.layers import BatchNormalization, Dropout
    from trainer.metrics import EPOCH_METRICS, resolve_mode
    from trainer.networks import input_kind, parameter_count
    from trainer.packing import (
        PackMember,
        is_pack_member_checkpoint,
        pack_key,
        packing_advice,
        packing_summary,
        run_pack,
    )
    from trainer.plugins import PluginInfo
    from trainer.plugins import activate as activate_plugins
    from trainer.plugins import installed as installed_plugins
    from trainer.run import EpochRecord, FoldSummary, SplitMetrics, TrialResult, run_trial
    from trainer.space import CategoricalParam, Choice, IntParam, SearchSpace, Suggester
    from trainer.spec_error import SpecError
    from trainer.template import (
        PARAMETERS,
        REGULARIZATION_PARAMETERS,
        TrainingSpec,
        TrialTemplate,
    )


_EXPORTS = {
    "Reporter": "trainer.callbacks",
    "CheckpointConfig": "trainer.config",
    "DatasetConfig": "trainer.config",
    "DiagnosisConfig": "trainer.config",
    "EarlyStoppingConfig": "trainer.config",
    "ModelConfig": "trainer.config",
    "TrialConfig": "trainer.config",
    "DatasetError": "trainer.data",
    "DatasetLoader": "trainer.contracts",
    "ModelBuilder": "trainer.contracts",
    "PluginInfo": "trainer.plugins",
    "activate_plugins": "trainer.plugins",
    "installed_plugins": "trainer.plugins",
    "Diagnosis": "trainer.diagnosis",
    "BatchNormalization": "trainer.layers",
    "Dropout": "trainer.layers",
    "EpochRecord": "trainer.run",
    "FoldSummary": "trainer.run",
    "SplitMetrics": "trainer.run",
    "TrialResult": "trainer.run",
    "run_trial": "trainer.run",
    "PackMember": "trainer.packing",
    "is_pack_member_checkpoint": "trainer.packing",
    "pack_key": "trainer.packing",
    "packing_advice": "trainer.packing",
    "packing_summary": "trainer.packing",
    "run_pack": "trainer.packing",
    "SearchSpace": "trainer.space",
    "Suggester": "trainer.space",
    "SpecError": "trainer.spec_error",
    "PARAMETERS": "trainer.template",
    "TrialTemplate": "trainer.template",
    "TrainingSpec": "trainer.template",
    "MaxEpochs": "trainer.config",
    "BASE_SEED_MAX": "trainer.config",
    "Seed": "trainer.config",
    "TASKS": "trainer.contracts",
    "load_splits": "trainer.data",
    "FILE_DATASETS": "trainer.datasets",
    "declared_shape": "trainer.datasets",
    "EPOCH_METRICS": "trainer.metrics",
    "resolve_mode": "trainer.metrics",
    "input_kind": "trainer.networks",
    "parameter_count": "trainer.networks",
    "CategoricalParam": "trainer.space",
    "Choice": "trainer.space",
    "IntParam": "trainer.space",
    "REGULARIZATION_PARAMETERS": "trainer.template",
}

__all__ = [
    "BASE_SEED_MAX",
    "EPOCH_METRICS",
    "FILE_DATASETS",
    "PARAMETERS",
    "REGULARIZATION_PARAMETERS",
    "TASKS",
    "BatchNormalization",
    "CategoricalParam",
    "CheckpointConfig",
    "Choice",
    "DatasetConfig",
    "DatasetError",
    "DatasetLoader",
    "Diagnosis",
    "DiagnosisConfig",
    "Dropout",
    "EarlyStoppingConfig",
    "EpochRecord",
    "FoldSummary",
    "IntParam",
    "MaxEpochs",
    "ModelBuilder",
    "ModelConfig",
    "PackMember",
    "PluginInfo",
    "Reporter",
    "SearchSpace",
    "Seed",
    "SpecError",
    "SplitMetrics",
    "Suggester",
    "TrainingSpec",
    "TrialConfig",
    "TrialResult",
    "TrialTemplate",
    "activate_plugins",
    "declared_shape",
    "input_kind",
    "installed_plugins",
    "is_pack_member_checkpoint",
    "load_splits",
    "pack_key",
    "packing_advice",
    "packing_summary",
    "parameter_count",
    "resolve_mode",
    "run_pack",
    "run_trial",
]


_RENAMED = {"activate_plugins": "activate", "installed_plugins": "installed"}
"""Exported names that differ from the module's own."""


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trainer' has no attribute {name!r}")
    return getattr(importlib.import_module(module), _RENAMED.get(name, name))

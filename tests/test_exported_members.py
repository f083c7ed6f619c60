"""The trainer's public surface: what the service may import, and nothing heavy on import."""

from __future__ import annotations

import subprocess
import sys

import trainer

EXPECTED = {
    "BatchNormalization",
    "CheckpointConfig",
    "DatasetConfig",
    "DatasetError",
    "DatasetLoader",
    "Diagnosis",
    "DiagnosisConfig",
    "Dropout",
    "EarlyStoppingConfig",
    "EpochRecord",
    "FoldSummary",
    "ModelBuilder",
    "ModelConfig",
    "PARAMETERS",
    "PluginInfo",
    "Reporter",
    "SearchSpace",
    "SpecError",
    "SplitMetrics",
    "Suggester",
    "TrialConfig",
    "TrialResult",
    "TrainingSpec",
    "TrialTemplate",
    "MaxEpochs",
    "activate_plugins",
    "installed_plugins",
    "run_trial",
    # trial packing (trainer.packing)
    "PackMember",
    "is_pack_member_checkpoint",
    "pack_key",
    "packing_advice",
    "packing_summary",
    "run_pack",
    # what the service's use cases validate and size studies with
    "BASE_SEED_MAX",
    "CategoricalParam",
    "Choice",
    "EPOCH_METRICS",
    "FILE_DATASETS",
    "IntParam",
    "REGULARIZATION_PARAMETERS",
    "Seed",
    "TASKS",
    "declared_shape",
    "input_kind",
    "load_splits",
    "parameter_count",
    "resolve_mode",
}


def test_public_names_are_exactly_the_documented_ones() -> None:
    assert set(trainer.__all__) == EXPECTED
    for name in trainer.__all__:
        assert getattr(trainer, name) is not None


def test_importing_the_package_loads_neither_torch_nor_lightning() -> None:
    code = "import sys, trainer; print('torch' in sys.modules, 'lightning' in sys.modules)"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.split() == ["False", "False"]

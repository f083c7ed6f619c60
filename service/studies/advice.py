"""Warnings about a spec that is valid but probably not what its author meant (never errors)."""

from __future__ import annotations

from collections.abc import Iterable

from trainer import REGULARIZATION_PARAMETERS

_PENALIZED_METRICS = {"loss": "data_loss", "val_loss": "val_data_loss"}


def spec_warnings(objective_metric: str, searched: Iterable[str]) -> list[str]:
    """What a client should hear about a study with this objective and these searched
    parameters (the submit response and `hpsearch submit` show it)."""
    warnings: list[str] = []
    penalties = [name for name in searched if name in REGULARIZATION_PARAMETERS]
    honest = _PENALIZED_METRICS.get(objective_metric)
    if penalties and honest is not None:
        warnings.append(
            f"objective.metric {objective_metric!r} includes the regularization penalty, which "
            f"this study searches ({', '.join(penalties)}): a stronger penalty raises "
            f"{objective_metric} whatever the fit, so the search is steered towards weak "
            f"regularization; {honest!r} is the same loss without the penalty"
        )
    return warnings

"""Shared test set-up: components that may be absent skip with a reason, except under CI.

Under CI (`CI=true`) `.ci/run` brings every component up, so a would-be skip is a failure: a
green CI run can never hide a test that did not run. GPU tests are the exception: CI has no GPU.
"""

from __future__ import annotations

import os

import pytest
import torch

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(available: bool, reason: str) -> None:
    """Skip the calling test when a component is missing; fail instead under CI."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: .ci/run must provide it, so this is a failure)")
    pytest.skip(reason)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is visible to torch")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)

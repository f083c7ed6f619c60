"""The CI regression gate behind `hpsearch regress` and `hpsearch baseline save`.

A study's best configuration is retrained with k seeds (`retrain`) into a `Measurement`, which
is also the baseline file's format (`measurement`). `decision` compares a candidate with a
baseline under one rule: a regression is a candidate worse by more than max(tolerance, seed
spread). `junit` and `summary` report the verdict; `studies` and `embedded` obtain the studies
(over REST, or a throw-away local stack). See docs/ci-gate.md.
"""

from service.gate.decision import (
    EXIT_CODES,
    Check,
    FingerprintCheck,
    Outcome,
    Verdict,
    compare,
    judge,
    metric_direction,
)
from service.gate.errors import GateError
from service.gate.junit import junit_error_xml, junit_xml
from service.gate.measurement import (
    Measurement,
    SeedRun,
    StudySource,
    load_baseline,
    package_versions,
    save_baseline,
)
from service.gate.retrain import best_params, measure, seeds_for
from service.gate.summary import markdown_error, markdown_summary

__all__ = [
    "EXIT_CODES",
    "Check",
    "FingerprintCheck",
    "GateError",
    "Measurement",
    "Outcome",
    "SeedRun",
    "StudySource",
    "Verdict",
    "best_params",
    "compare",
    "judge",
    "junit_error_xml",
    "junit_xml",
    "load_baseline",
    "markdown_error",
    "markdown_summary",
    "measure",
    "metric_direction",
    "package_versions",
    "save_baseline",
    "seeds_for",
]

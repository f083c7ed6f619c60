"""The verdict as JUnit XML, which every CI system can show: one `<testsuite>`, one
`<testcase>` per check.

- `objective <metric>` and `metric <name>` (each `--metric`): a `<failure type="regression">`
  when the candidate regressed.
- `data fingerprint`: an `<error type="data-mismatch">` when the two sides trained on different
  data (the gate cannot decide: exit 2); with `--allow-data-change` the case passes and says
  so in its `<system-out>`.
- A gate that stopped before comparing (exit 2) writes one `gate` case holding an `<error>`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from service.gate.decision import Check, Verdict
from service.gate.measurement import Measurement

SUITE = "hpsearch regress"
CLASSNAME = "hpsearch.regress"


def junit_xml(
    verdict: Verdict, baseline: Measurement, candidate: Measurement, *, time_s: float = 0.0
) -> str:
    suite = _suite(time_s)
    properties = ET.SubElement(suite, "properties")
    _property(properties, "outcome", verdict.outcome)
    _property(properties, "baseline.seeds", _join(baseline.seeds))
    _property(properties, "candidate.seeds", _join(candidate.seeds))
    if verdict.checks:
        _property(properties, "tolerance", f"{verdict.checks[0].tolerance:g}")
    for name, version in candidate.packages.items():
        _property(properties, f"candidate.{name}", version)
    for check in verdict.checks:
        case = _case(suite, check.name)
        if check.regressed:
            failure = ET.SubElement(case, "failure", message=check.message, type="regression")
            failure.text = _values(check)
        else:
            ET.SubElement(case, "system-out").text = f"{check.message}\n{_values(check)}"
    fingerprint = _case(suite, "data fingerprint")
    if verdict.fingerprint.is_error:
        ET.SubElement(
            fingerprint, "error", message=verdict.fingerprint.message, type="data-mismatch"
        )
    else:
        ET.SubElement(fingerprint, "system-out").text = verdict.fingerprint.message
    _count(suite)
    return _serialize(suite)


def junit_error_xml(message: str, *, time_s: float = 0.0) -> str:
    """The report of a gate that could not compare (exit 2)."""
    suite = _suite(time_s)
    ET.SubElement(_case(suite, "gate"), "error", message=message, type="gate-error")
    _count(suite)
    return _serialize(suite)


def _suite(time_s: float) -> ET.Element:
    return ET.Element(
        "testsuite",
        name=SUITE,
        timestamp=datetime.now(UTC).replace(microsecond=0).isoformat(),
        time=f"{time_s:.3f}",
    )


def _case(suite: ET.Element, name: str) -> ET.Element:
    return ET.SubElement(suite, "testcase", classname=CLASSNAME, name=name, time="0")


def _property(properties: ET.Element, name: str, value: str) -> None:
    ET.SubElement(properties, "property", name=name, value=value)


def _count(suite: ET.Element) -> None:
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(case.find("failure") is not None for case in cases)))
    suite.set("errors", str(sum(case.find("error") is not None for case in cases)))
    suite.set("skipped", "0")


def _values(check: Check) -> str:
    return (
        f"baseline values: {_join(check.baseline_values)}\n"
        f"candidate values: {_join(check.candidate_values)}"
    )


def _join(values: tuple[float, ...] | list[int]) -> str:
    return ", ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in values)


def _serialize(suite: ET.Element) -> str:
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"

"""How ``handgrad check`` reports: one line per op or rule, the failure with its diagnosis and
smallest failing input, and the same as JSON records (``--json``) for grading scripts.

Works on any ``OpReport``; the diagnosis is read with ``getattr`` (a report without one
prints none)."""
from __future__ import annotations

import math
import re
from typing import Any

# Short labels of the properties, in the order printed.
LABELS = {
    "kink_examples_hold": "kinks",
    "forward_matches_reference": "forward",
    "vjp_matches_finite_differences": "vjp",
    "jvp_matches_finite_differences": "jvp",
    "complex_step_matches": "complex",
    "derivatives_are_accurate": "accuracy",
    "jvp_vjp_transpose": "transpose",
    "backward_is_linear": "linear",
    "constant_inputs_change_nothing": "constants",
    "memory_layout_changes_nothing": "layout",
    "float32_agrees_with_float64": "float32",
    "rules_compute_in_float32": "dtypes",
    "rules_leave_their_arguments_alone": "no-writes",
    "rules_read_their_own_parameters": "re-entrant",
    "rules_run_as_a_plan_runs_them": "replay",
}
YES_NO = {"rules_compute_in_float32", "rules_leave_their_arguments_alone"}
INDENT = "      "

_SAMPLE = re.compile(r"fails for sample (?P<input>.*?) \(seed (?P<seed>\d+)\):\n", re.S)


def _number(x: float | None, yes_no: bool) -> str:
    if x is None:
        return "-"
    if yes_no:
        return "ok"
    return "0" if x == 0 else f"{x:.0e}"


def diagnosis(report: Any) -> str | None:
    """The report's diagnosis of a failure (what is most likely wrong), if it has one."""
    return getattr(report, "diagnosis", None)


def failing_input(report: Any) -> tuple[str | None, int | None]:
    """The smallest failing sample (``args=..., params=...``) and its seed, read from the
    failure message; (None, None) when the failure has no sample (a kink example, a
    missing spec)."""
    m = _SAMPLE.search(report.failure or "")
    return (m["input"], int(m["seed"])) if m else (None, None)


def line(report: Any, width: int) -> str:
    """PASS, FAIL or ERROR (its spec cannot check it), the name, the examples drawn and the
    worst error of each property."""
    status = "PASS" if report.passed else "ERROR" if getattr(report, "unusable", False) else "FAIL"
    worst = "  ".join(f"{LABELS.get(p, p)} {_number(report.worst[p], p in YES_NO)}"
                      for p in [*LABELS, *sorted(set(report.worst) - set(LABELS))]
                      if p in report.worst)
    return f"{status}  {report.name:<{width}}  {report.examples:>5} examples  {worst}"


def failure_message(report: Any) -> str:
    """The failure message (property, shrunk sample, error) with the diagnosis, when there
    is one, first: ``likely: ...`` (check.py appends it last)."""
    text = report.failure or ""
    why = diagnosis(report)
    if not why:
        return text
    return f"likely: {why}\n{text.removesuffix(chr(10) + 'likely: ' + why)}"


def failure_text(report: Any) -> str:
    """``failure_message``, indented under the report's line."""
    return INDENT + failure_message(report).replace("\n", "\n" + INDENT)


def _finite(x: float | None) -> float | str | None:
    """JSON has no NaN or infinity: those become the strings "nan", "inf"."""
    return x if x is None or math.isfinite(x) else str(x)


def record(report: Any, kind: str) -> dict[str, Any]:
    """One JSON record of a checked op or rule."""
    sample, seed = failing_input(report)
    return {
        "name": report.name,
        "kind": kind,
        "passed": report.passed,
        "failed_property": report.failed_property,
        "diagnosis": diagnosis(report),
        "input": sample,
        "seed": seed,
        "failure": report.failure,
        "examples": report.examples,
        "worst": {p: _finite(e) for p, e in report.worst.items()},
    }


def mutants_record(report: Any, kind: str) -> dict[str, Any]:
    """One JSON record of the mutants planted in an op or rule."""
    return {
        "name": report.name,
        "kind": kind,
        "passed": report.failure is None and not report.missed,
        "failure": report.failure,
        "mutants": [{"name": r.mutant.name, "caught": r.caught, "caught_by": r.caught_by,
                     "reason": r.reason or None} for r in report.results],
    }

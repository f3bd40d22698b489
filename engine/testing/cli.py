"""The property suite as a command: ``python -m handgrad.engine.testing`` (also ``handgrad check``).

    python -m handgrad.engine.testing                        # every registered op
    python -m handgrad.engine.testing --module mypkg.myops   # the ops mypkg.myops registers
    python -m handgrad.engine.testing --op gelu --op relu --profile thorough
    python -m handgrad.engine.testing --mutants --module mypkg.myops

One line per op: PASS or FAIL, the examples run, the worst error each property measured.
A failure prints the (shrunk) counterexample; the exit status is 1 if any op failed (or,
with --mutants, if a spec let a planted bug through), 2 for a usage error (unknown op or
profile, a module that does not import, hypothesis missing).

This module imports no hypothesis at the top, so that its absence is one clear line.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from . import PROFILE_NAMES, HypothesisMissing, require_hypothesis

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
    "float32_agrees_with_float64": "float32",
    "rules_compute_in_float32": "dtypes",
    "rules_leave_their_arguments_alone": "no-writes",
}
YES_NO = {"rules_compute_in_float32", "rules_leave_their_arguments_alone"}


class UsageError(Exception):
    """Bad options or a module that cannot be checked: one line, exit status 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--module", action="append", default=[], metavar="MODULE",
                        help="import MODULE (a dotted name such as mypkg.myops, or a .py file) "
                             "and check the ops it registers; repeatable. Default: every "
                             "registered op")
    parser.add_argument("--op", action="append", default=[], metavar="NAME",
                        help="check only this op; repeatable")
    parser.add_argument("--profile", choices=PROFILE_NAMES,
                        help="examples per property: dev 10, ci 25, thorough 1000 (default: "
                             "$HANDGRAD_PROFILE, else ci if $CI is set, else dev; "
                             "$HYPOTHESIS_PROFILE is not read)")
    parser.add_argument("--mutants", action="store_true",
                        help="plant generic bugs in each op and report those its spec does "
                             "not catch, with the reason")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m handgrad.engine.testing",
        description="Check ops' derivative rules with their hypothesis specs.")
    add_arguments(parser)
    return parser


# --- choosing the ops ------------------------------------------------------------------------

def _import(module: str) -> Any:
    """Import a dotted module name (the current directory first on the path) or a .py file."""
    if module.endswith(".py"):
        path = Path(module)
        if not path.is_file():
            raise UsageError(f"--module {module}: no such file")
        name = path.stem
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return mod
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(module)


def select_ops(modules: Sequence[str], names: Sequence[str]) -> list[Any]:
    """The ops to check: those the modules register (or every registered op), narrowed
    to ``names`` if given."""
    from handgrad import engine
    registry = engine.REGISTRY
    if modules:
        chosen: dict[str, Any] = {}
        for module in modules:
            before = set(registry)
            try:
                mod = _import(module)
            except UsageError:
                raise
            except ModuleNotFoundError as e:
                if e.name and module.startswith(e.name):
                    raise UsageError(f"--module {module}: no module named {e.name!r} (run "
                                     f"from the directory that contains it, or install it)") from None
                raise UsageError(f"--module {module}: importing it failed: {e}") from None
            except Exception as e:
                raise UsageError(f"--module {module}: importing it failed: "
                                 f"{type(e).__name__}: {e}") from None
            found = {n: op for n, op in registry.items()
                     if n not in before or type(op).__module__ == mod.__name__}
            if not found:
                raise UsageError(f"--module {module}: it registers no op (decorate the op "
                                 f"classes with @engine.register)")
            chosen.update(found)
    else:
        chosen = dict(registry)
    if names:
        unknown = [n for n in names if n not in chosen]
        if unknown:
            where = " in the modules given" if modules else ""
            raise UsageError(f"--op {unknown[0]}: no such op{where}; choose from "
                             f"{', '.join(sorted(chosen))}")
        chosen = {n: chosen[n] for n in names}
    return [chosen[n] for n in sorted(chosen)]


# --- reporting ---------------------------------------------------------------------------

def _number(x: float | None, yes_no: bool) -> str:
    if x is None:
        return "-"
    if yes_no:
        return "ok"
    return "0" if x == 0 else f"{x:.0e}"


def format_report(report: Any, width: int) -> str:
    status = "PASS" if report.passed else "FAIL"
    worst = "  ".join(f"{LABELS.get(p, p)} {_number(report.worst[p], p in YES_NO)}"
                      for p in LABELS if p in report.worst)
    return f"{status}  {report.name:<{width}}  {report.examples:>5} examples  {worst}"


def check_command(args: argparse.Namespace, out: Any = None) -> int:
    """Run the check the options describe; returns the exit status."""
    out = out or sys.stdout
    require_hypothesis()
    from hypothesis import settings

    from . import profiles
    from .check import run_op
    from .mutants import run_mutants

    try:
        full = profiles.full_name(args.profile) if args.profile else profiles.default_name()
    except ValueError as e:
        raise UsageError(str(e)) from None
    profile = settings.get_profile(full)
    ops = select_ops(args.module, args.op)
    width = max(len(op.name) for op in ops)
    short = full.removeprefix("handgrad-")
    print(f"checking {len(ops)} op{'s' if len(ops) != 1 else ''} on profile {short} "
          f"({profile.max_examples} examples per property)"
          + (", planting mutants" if args.mutants else ""), file=out, flush=True)
    if args.mutants:
        return _mutants(ops, profile, run_mutants, width, out)
    print("worst error per property: |rule - reference| / max(|reference|, 1); "
          "'-' does not apply", file=out, flush=True)
    failed = 0
    start = time.perf_counter()
    for op in ops:
        report = run_op(op, profile=profile)
        print(format_report(report, width), file=out, flush=True)
        if report.failure is not None:
            failed += 1
            print("      " + report.failure.replace("\n", "\n      "), file=out, flush=True)
    seconds = time.perf_counter() - start
    print(f"{len(ops) - failed} passed, {failed} failed in {seconds:.1f} s", file=out)
    return 1 if failed else 0


def _mutants(ops: list[Any], profile: Any, run_mutants: Any, width: int, out: Any) -> int:
    missed_total = broken = 0
    for op in ops:
        report = run_mutants(op, profile=profile)
        if report.failure is not None:
            broken += 1
            print(f"FAIL    {op.name}: the op fails its own spec, so mutants cannot be "
                  f"judged:\n      " + report.failure.replace("\n", "\n      "), file=out)
            continue
        caught = len(report.results) - len(report.missed)
        print(f"{op.name}: {caught} of {len(report.results)} mutants caught", file=out)
        for r in report.results:
            if r.caught:
                print(f"  caught  {r.mutant.name:<22} by {r.caught_by}", file=out)
            else:
                print(f"  MISSED  {r.mutant.name:<22} {r.reason}", file=out)
        missed_total += len(report.missed)
        out.flush()
    if missed_total or broken:
        print(f"{missed_total} mutant{'s' if missed_total != 1 else ''} not caught"
              + (f", {broken} op{'s' if broken != 1 else ''} failing their own spec" if broken else "")
              + ": strengthen the specs (samples, tolerances) so that they fail", file=out)
        return 1
    print("every mutant was caught", file=out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return check_command(args)
    except (UsageError, HypothesisMissing) as e:
        print(f"python -m handgrad.engine.testing: error: {e}", file=sys.stderr)
        return 2

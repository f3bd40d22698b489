"""The property suite as a command: ``python -m handgrad.engine.testing`` (also ``handgrad check``).

    python -m handgrad.engine.testing                        # every registered op
    python -m handgrad.engine.testing --module mypkg.myops   # the ops and rules of mypkg.myops
    python -m handgrad.engine.testing --module student_layers.py --json   # an autograder
    python -m handgrad.engine.testing --op gelu --op relu --profile thorough
    python -m handgrad.engine.testing --mutants --module mypkg.myops

One line per op or rule: PASS or FAIL, the examples drawn, the worst error each property
measured. A failure prints its diagnosis (when there is one) and the (shrunk)
counterexample; ``--json`` prints a list of records instead (targets.py says what a
module's rules are, report.py what is printed). The exit status is 1 if anything failed
(or, with --mutants, if a spec let a planted bug through), 2 for a usage error (unknown op
or profile, a module that does not import, hypothesis missing, a sample strategy that cannot
check its rule: that rule is reported as ERROR and the others are still checked).

This module imports no hypothesis at the top, so that its absence is one clear line.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Sequence

from . import PROFILE_NAMES, HypothesisMissing, require_hypothesis

if TYPE_CHECKING:
    from .targets import Target


class UsageError(Exception):
    """Bad options or a module that cannot be checked: one line, exit status 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--module", action="append", default=[], metavar="MODULE",
                        help="import MODULE (a dotted name such as mypkg.myops, or a .py file) "
                             "and check the ops it registers and the rules it declares "
                             "(module-level rules, HANDGRAD_RULES); repeatable. Default: "
                             "every registered op")
    parser.add_argument("--op", action="append", default=[], metavar="NAME",
                        help="check only this op or rule; repeatable")
    parser.add_argument("--profile", choices=PROFILE_NAMES,
                        help="examples per property: dev 10, ci 25, thorough 1000 (default: "
                             "$HANDGRAD_PROFILE, else ci if $CI is set, else dev; "
                             "$HYPOTHESIS_PROFILE is not read)")
    parser.add_argument("--mutants", action="store_true",
                        help="plant generic bugs in each op and rule and report those its "
                             "spec does not catch, with the reason")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON list of records (name, kind, passed, "
                             "failed_property, diagnosis, input, failure, examples, worst) "
                             "instead of the report, for grading scripts")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m handgrad.engine.testing",
        description="Check ops' derivative rules with their hypothesis specs.")
    add_arguments(parser)
    return parser


# --- choosing the ops and rules ------------------------------------------------------------

def _import(module: str) -> ModuleType:
    """Import a dotted module name (the current directory first on the path) or a .py file
    (its directory first on the path, so that it can import its neighbours). Raises
    UsageError, in one line naming the module and where its code failed, if it does not
    import."""
    path = Path(module) if module.endswith(".py") else None
    if path is not None and not path.is_file():
        raise UsageError(f"--module {module}: " + ("a directory, not a .py file" if path.is_dir()
                                                   else "no such file"))
    folder = str(path.resolve().parent) if path is not None else os.getcwd()
    if folder not in sys.path and (path is not None or "" not in sys.path):
        sys.path.insert(0, folder)
    try:
        return _load_file(path) if path is not None else importlib.import_module(module)
    except ModuleNotFoundError as e:
        if path is None and e.name and module.startswith(e.name):
            raise UsageError(f"--module {module}: no module named {e.name!r} (run "
                             f"from the directory that contains it, or install it)") from None
        raise UsageError(f"--module {module}: importing it failed{_where(e, module)}: "
                         f"{type(e).__name__}: {e}") from None
    except (Exception, SystemExit) as e:       # a student's sys.exit() or argparse too
        raise UsageError(f"--module {module}: importing it failed{_where(e, module)}: "
                         f"{type(e).__name__}: {e}") from None


def _load_file(path: Path) -> ModuleType:
    """Run a .py file as a module named after it (unless that name is taken by another
    module, as a student's random.py would take numpy's)."""
    name = path.stem
    taken = sys.modules.get(name)
    taken_file = getattr(taken, "__file__", None)
    if taken is not None and taken_file is not None and Path(taken_file).resolve() == path.resolve():
        return taken    # imported already (a neighbour's `from losses import square`): its rules
    if taken is not None:
        name = f"_handgrad_check_{name}"
    spec = importlib.util.spec_from_file_location(name, path.resolve())
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    return mod


def _where(error: BaseException, module: str) -> str:
    """`` at line N`` of the module's own file where ``error`` was raised (its deepest
    frame there), or "" when the module's code is not on the traceback."""
    if module.endswith(".py"):
        origin = str(Path(module).resolve())
    else:
        try:
            spec = importlib.util.find_spec(module)
        except Exception:
            return ""
        if spec is None or spec.origin is None:
            return ""
        origin = str(Path(spec.origin).resolve())
    if isinstance(error, SyntaxError) and error.filename and error.lineno \
            and str(Path(error.filename).resolve()) == origin:
        return f" at line {error.lineno}"
    lines = [f.lineno for f in traceback.extract_tb(error.__traceback__)
             if str(Path(f.filename).resolve()) == origin]
    return f" at line {lines[-1]}" if lines else ""


def _module_key(module: str) -> str:
    """What a --module names: a .py file's resolved path, else the dotted module name."""
    return str(Path(module).resolve()) if module.endswith(".py") else module


def select(modules: Sequence[str], names: Sequence[str]) -> list[Target]:
    """What to check: the ops the modules register and the rules they declare (or every
    registered op), narrowed to ``names`` if given; ops first, then rules, each by name."""
    from handgrad import engine

    from .targets import Target, declared, unique
    registry = engine.REGISTRY
    if modules:
        # one module given twice (op.py and ./op.py) is checked once, not refused as two
        # modules registering the same ops
        modules = list({_module_key(m): m for m in reversed(modules)}.values())[::-1]
        chosen: list[Target] = []
        for module in modules:
            before = set(registry)
            mod = _import(module)
            ops = [Target(n, op) for n, op in registry.items()
                   if n not in before or type(op).__module__ == mod.__name__]
            try:
                rules = declared(mod)
            except ValueError as e:
                raise UsageError(f"--module {module}: {e}") from None
            if not ops and not rules:
                raise UsageError(f"--module {module}: it registers no op (decorate the op "
                                 f"classes with @engine.register) and declares no rule "
                                 f"(bind numpy_rule(...) to a name, or list rules in "
                                 f"HANDGRAD_RULES)")
            chosen += ops + rules
        try:
            chosen = unique(chosen, "--module " + " --module ".join(modules))
        except ValueError as e:
            raise UsageError(str(e)) from None
    else:
        chosen = [Target(n, op) for n, op in registry.items()]
    by_name = {t.name: t for t in chosen}
    if names:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            what = "op" if all(t.kind == "op" for t in chosen) else "op or rule"
            where = " in the modules given" if modules else ""
            raise UsageError(f"--op {unknown[0]}: no such {what}{where}; choose from "
                             f"{', '.join(sorted(by_name))}")
        chosen = [by_name[n] for n in dict.fromkeys(names)]
    return sorted(chosen, key=lambda t: (t.kind != "op", t.name))


def _count(targets: Sequence[Target]) -> str:
    """``3 ops``, ``2 rules``, ``1 op and 2 rules``."""
    ops = sum(t.kind == "op" for t in targets)
    parts = [f"{n} {word}{'s' if n != 1 else ''}"
             for n, word in ((ops, "op"), (len(targets) - ops, "rule")) if n]
    return " and ".join(parts) or "0 ops"


# --- running ---------------------------------------------------------------------------------

def check_command(args: argparse.Namespace, out: Any = None) -> int:
    """Run the check the options describe; returns the exit status."""
    out = out or sys.stdout
    require_hypothesis()
    from . import profiles

    try:
        full = profiles.full_name(args.profile) if args.profile else profiles.default_name()
    except ValueError as e:
        raise UsageError(str(e)) from None
    from hypothesis import settings

    profile = settings.get_profile(full)      # run_op leaves out the explain phase
    as_json = getattr(args, "json", False)
    # With --json, stdout carries the JSON alone: what the checked code prints (a student's
    # debugging prints, at import or in a rule) goes to stderr, so a grader can parse it.
    diverted = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    with diverted:
        targets = select(args.module, args.op)
        if not as_json:
            short = full.removeprefix("handgrad-")
            print(f"checking {_count(targets)} on profile {short} ({profile.max_examples} "
                  f"examples per property)" + (", planting mutants" if args.mutants else ""),
                  file=out, flush=True)
        if args.mutants:
            return _mutants(targets, profile, out, as_json)
        return _check(targets, profile, out, as_json)


def _check(targets: list[Target], profile: Any, out: Any, as_json: bool) -> int:
    from . import report as fmt
    from .check import run_op

    width = max(len(t.name) for t in targets)
    if not as_json:
        print("worst error per property: |rule - reference| / max(|reference|, 1); "
              "'-' does not apply", file=out, flush=True)
    failed = unusable = 0
    records = []
    start = time.perf_counter()
    for t in targets:
        report = run_op(t.op, t.spec, profile=profile)
        failed += not report.passed
        unusable += report.unusable
        records.append(fmt.record(report, t.kind))
        if not as_json:
            print(fmt.line(report, width), file=out, flush=True)
            if not report.passed:
                print(fmt.failure_text(report), file=out, flush=True)
    if as_json:
        print(json.dumps(records, indent=1, allow_nan=False), file=out)
    else:
        seconds = time.perf_counter() - start
        errors = f" ({unusable} could not be checked)" if unusable else ""
        print(f"{len(targets) - failed} passed, {failed} failed{errors} in {seconds:.1f} s", file=out)
    return 2 if unusable else 1 if failed else 0


def _mutants(targets: list[Target], profile: Any, out: Any, as_json: bool) -> int:
    from . import report as fmt
    from .mutants import run_mutants

    missed_total = broken = unusable = 0
    records = []
    for t in targets:
        report = run_mutants(t.op, t.spec, profile=profile)
        records.append(fmt.mutants_record(report, t.kind))
        if report.failure is not None:
            broken += 1
            unusable += report.unusable       # an ERROR, as without --mutants (exit 2)
            what = "its spec cannot check it" if report.unusable else "it fails its own spec"
            if not as_json:
                print(f"{'ERROR' if report.unusable else 'FAIL '}   {t.name}: {what}, so mutants "
                      f"cannot be judged:\n" + fmt.failure_text(report), file=out)
            continue
        missed_total += len(report.missed)
        if not as_json:
            _print_mutants(t.name, report, out)
    if as_json:
        print(json.dumps(records, indent=1), file=out)
    elif missed_total or broken:
        print(f"{missed_total} mutant{'s' if missed_total != 1 else ''} not caught"
              + (f", {broken} failing {'their' if broken != 1 else 'its'} own spec" if broken else "")
              + ": strengthen the specs (samples, tolerances) so that they fail", file=out)
    else:
        print("every mutant was caught", file=out)
    return 2 if unusable else 1 if missed_total or broken else 0


def _print_mutants(name: str, report: Any, out: Any) -> None:
    caught = len(report.results) - len(report.missed)
    print(f"{name}: {caught} of {len(report.results)} mutants caught", file=out)
    for r in report.results:
        if r.caught:
            print(f"  caught  {r.mutant.name:<22} by {r.caught_by}", file=out)
        else:
            print(f"  MISSED  {r.mutant.name:<22} {r.reason}", file=out)
    out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return check_command(args)
    except (UsageError, HypothesisMissing) as e:
        print(f"python -m handgrad.engine.testing: error: {e}", file=sys.stderr)
        return 2

"""Mutation testing of the pure modules with mutmut, and its score per module.

Not part of CI (it takes about an hour on two cores). From the repository root:

    python -m tests.mutation              # run what is not checked yet, then report
    python -m tests.mutation --survivors  # check the survivors again (after adding tests)
    python -m tests.mutation --fresh      # forget every earlier result first
    python -m tests.mutation --report     # only the report of what was run so far
    python -m tests.mutation --report --show   # ... with the diff of every survivor

What is mutated, and which tests run against it, is set in [tool.mutmut] in
pyproject.toml: the pure protocol and policy modules and peerchat/delivery.py,
against their fast unit tests. mutmut works in mutants/ (git-ignored): a copy
of the tree where every function can switch to any of its mutants.

The score of a module is the share of its mutants that a test kills (a failure
or a time-out). Survivors count against it, and so do mutants no test reaches.
Survivors judged equivalent (no test can tell them from the original) are
listed with the reason in tests/mutation_equivalent.txt; the report shows the
score with them counted as survivors and with them set aside.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"
EQUIVALENT_FILE = ROOT / "tests" / "mutation_equivalent.txt"
TARGET_SCORE = 85.0

# mutmut's exit codes (mutmut/stats.py), grouped as this report counts them.
KILLED = {1, 3, 24, -24, 36, 152, 255, 37}  # failed, pytest error, time-out, type check
SURVIVED = {0}
NOT_REACHED = {5, 33}  # no test runs this function
NOT_CHECKED = {None}


@dataclass
class ModuleResult:
    path: str
    killed: int = 0
    survivors: list[str] = field(default_factory=list)
    not_reached: list[str] = field(default_factory=list)
    not_checked: int = 0
    other: Counter[str] = field(default_factory=Counter)

    @property
    def checked(self) -> int:
        return self.killed + len(self.survivors) + len(self.not_reached) + sum(self.other.values())

    def score(self, equivalent: Collection[str] = ()) -> float | None:
        counted = self.checked - len(set(equivalent) & set(self.survivors))
        return 100.0 * self.killed / counted if counted else None


def mutated_globs() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs: list[str] = config["tool"]["mutmut"]["only_mutate"]
    return globs


def load_results() -> dict[str, ModuleResult]:
    results: dict[str, ModuleResult] = {}
    globs = mutated_globs()
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        path = meta.relative_to(MUTANTS).as_posix().removesuffix(".meta")
        if not any(fnmatch(path, pattern) for pattern in globs):
            continue
        codes: dict[str, int | None] = json.loads(meta.read_text(encoding="utf-8"))[
            "exit_code_by_key"
        ]
        if not codes:
            continue
        result = results.setdefault(path, ModuleResult(path))
        for name, code in sorted(codes.items()):
            if code in KILLED:
                result.killed += 1
            elif code in SURVIVED:
                result.survivors.append(name)
            elif code in NOT_REACHED:
                result.not_reached.append(name)
            elif code in NOT_CHECKED:
                result.not_checked += 1
            else:
                result.other[f"exit code {code}"] += 1
    return results


def load_equivalent() -> dict[str, str]:
    """mutant name -> why it is equivalent, from tests/mutation_equivalent.txt."""
    equivalent: dict[str, str] = {}
    if not EQUIVALENT_FILE.exists():
        return equivalent
    for line in EQUIVALENT_FILE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, reason = line.partition(" ")
            equivalent[name] = reason.strip()
    return equivalent


def report(show: bool) -> int:
    results = load_results()
    if not results:
        print("No results in mutants/: run `python -m tests.mutation` first.")
        return 1
    equivalent = load_equivalent()
    print(
        f"{'module':36} {'mutants':>7} {'killed':>6} {'survived':>8} {'no test':>7} "
        f"{'score':>6} {'w/o equiv.':>10}"
    )
    below = []
    for path, result in sorted(results.items()):
        raw = result.score()
        net = result.score(set(equivalent))
        shown = [f"{x:5.1f}%" if x is not None else "    -" for x in (raw, net)]
        print(
            f"{path:36} {result.checked:7} {result.killed:6} {len(result.survivors):8} "
            f"{len(result.not_reached):7} {shown[0]:>6} {shown[1]:>10}"
            + (f"  ({result.not_checked} not checked yet)" if result.not_checked else "")
            + (f"  {dict(result.other)}" if result.other else "")
        )
        if net is not None and net < TARGET_SCORE:
            below.append(path)
    total = sum(r.checked for r in results.values())
    killed = sum(r.killed for r in results.values())
    if total:
        print(f"{'all':36} {total:7} {killed:6} {'':8} {'':7} {100.0 * killed / total:5.1f}%")
    survivors = [name for r in results.values() for name in r.survivors + r.not_reached]
    unexplained = [name for name in survivors if name not in equivalent]
    print(
        f"\n{len(survivors)} survivors, {len(survivors) - len(unexplained)} judged equivalent "
        f"({EQUIVALENT_FILE.relative_to(ROOT)}), {len(unexplained)} not:"
    )
    for name in unexplained:
        print(f"  {name}")
        if show:
            _show(name)
    stale = sorted(set(equivalent) - set(survivors))
    if stale:
        print(f"\nListed as equivalent but not surviving now (renumbered or killed): {stale}")
    if below:
        print(f"\nBelow {TARGET_SCORE:.0f}%: {', '.join(below)}")
    return 0


def _show(name: str) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "mutmut", "show", name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    print("    " + shown.stdout.strip().replace("\n", "\n    "))


def run(names: list[str], max_children: int | None) -> int:
    command = [sys.executable, "-m", "mutmut", "run"]
    if max_children is not None:
        command += ["--max-children", str(max_children)]
    return subprocess.run([*command, *names], cwd=ROOT, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--report", action="store_true", help="only report the last results")
    group.add_argument("--survivors", action="store_true", help="check the survivors again")
    group.add_argument("--fresh", action="store_true", help="forget earlier results first")
    parser.add_argument("--show", action="store_true", help="print each survivor's diff")
    parser.add_argument("--max-children", type=int, help="parallel workers (default: CPUs)")
    args = parser.parse_args(argv)
    if not args.report:
        if args.fresh and MUTANTS.exists():
            shutil.rmtree(MUTANTS)
        names: list[str] = []
        if args.survivors:
            names = [n for r in load_results().values() for n in r.survivors + r.not_reached]
            if not names:
                print("No survivors to check again.")
                return report(args.show)
        code = run(names, args.max_children)
        if code != 0:
            print(f"mutmut run ended with exit code {code}", file=sys.stderr)
            return code
    return report(args.show)


if __name__ == "__main__":
    sys.exit(main())

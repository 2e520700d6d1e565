"""Coverage-guided fuzzing of peer_chat with atheris (libFuzzer). From the repository root:

    python -m tests.fuzz                          # list the targets
    python -m tests.fuzz TARGET [LIBFUZZER_FLAG...]   # fuzz one target until stopped
    python -m tests.fuzz TARGET -max_total_time=3600  # ... for an hour
    python -m tests.fuzz --all --seconds 600      # every target in turn, then a table
    python -m tests.fuzz TARGET --replay FILE...  # run saved inputs once (a crash, say)
    python -m tests.fuzz --write-seeds            # rewrite tests/fuzz/corpus/ from targets.py

A target fuzzes in this process (libFuzzer takes it over). Its corpus grows in
.fuzz/corpus/TARGET/ (git-ignored), starting from the stored seeds in
tests/fuzz/corpus/TARGET/ and from seeds signed with this process's keys; an
input that crashes it is saved in .fuzz/crashes/ (with --all: .fuzz/runs/).
With `--stats FILE`, how deep the inputs got (the target's stages) is written
to FILE as JSON every half second. --all also replays each corpus under
coverage.py and gives the share of lines reached in the modules the target
is about. tests/test_fuzz.py runs every target for a few seconds;
docs/TESTING.md has the figures of a long run.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.fuzz import NAMES

ROOT = Path(__file__).resolve().parents[2]
SEEDS = ROOT / "tests" / "fuzz" / "corpus"
WORK = ROOT / ".fuzz"
INSTRUMENTED = ["peerchat", "storage", "crypto_utils"]  # our code; not the harness


class Tally:
    """Counts the stage each input reached and writes the counts out now and then."""

    def __init__(self, run: Callable[[bytes], str], deep: frozenset[str], path: Path | None):
        self._run = run
        self._deep = deep
        self._path = path
        self.stages: Counter[str] = Counter()
        self._next_write = 0.0

    def __call__(self, data: bytes) -> None:
        self.stages[self._run(data)] += 1
        if self._path is not None and time.monotonic() >= self._next_write:
            self.write()

    def write(self) -> None:
        assert self._path is not None
        report = {"stages": dict(self.stages), "deep": sorted(self._deep)}
        self._path.write_text(json.dumps(report), encoding="utf-8")
        self._next_write = time.monotonic() + 0.5


def load_target(name: str) -> object:
    import atheris

    with atheris.instrument_imports(include=INSTRUMENTED):
        from tests.fuzz import targets
    return targets.TARGETS[name]()


def fuzz(name: str, stats: Path | None, flags: list[str]) -> None:
    """Fuzz one target in this process; libFuzzer exits it."""
    import atheris

    target = load_target(name)  # first: what it imports is instrumented only now
    from tests.fuzz.targets import Target

    assert isinstance(target, Target)
    corpus_dirs = [arg for arg in flags if not arg.startswith("-")]
    flags = [arg for arg in flags if arg.startswith("-")]
    if not corpus_dirs:
        corpus_dirs = [str(WORK / "corpus" / name), str(SEEDS / name)]
    Path(corpus_dirs[0]).mkdir(parents=True, exist_ok=True)
    for number, seed in enumerate(target.runtime_seeds()):
        (Path(corpus_dirs[0]) / f"runtime-seed-{number}").write_bytes(seed)
    if not any(flag.startswith("-artifact_prefix=") for flag in flags):
        (WORK / "crashes").mkdir(parents=True, exist_ok=True)
        flags.append(f"-artifact_prefix={WORK / 'crashes' / name}-")
    tally = Tally(target.run, target.DEEP, stats)
    atheris.Setup([sys.argv[0], *flags, *corpus_dirs], tally)
    atheris.Fuzz()


def replay(name: str, files: list[str]) -> int:
    from tests.fuzz.targets import TARGETS

    target = TARGETS[name]()
    for file in files:
        print(f"{file}: {target.run(Path(file).read_bytes())}")
    return 0


def write_seeds() -> int:
    from tests.fuzz.targets import STORED_SEEDS

    for name, seeds in STORED_SEEDS.items():
        folder = SEEDS / name
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        for number, seed in enumerate(seeds):
            (folder / f"seed-{number}").write_bytes(seed)
        print(f"{folder.relative_to(ROOT)}: {len(seeds)} seeds")
    return 0


# -- one target in a child process, and what it reports --------------------------------


@dataclass
class RunResult:
    name: str
    returncode: int
    printed: str  # stdout: where atheris prints an uncaught exception
    log: str  # stderr: libFuzzer's log
    stages: dict[str, int]  # stage reached -> inputs (the target's tally)
    deep: list[str]  # the stages past the cheap checks

    def _final(self, key: str) -> int:
        found = re.findall(rf"^stat::{key}:\s+(\d+)", self.log, re.MULTILINE)
        return int(found[-1]) if found else 0

    @property
    def executions(self) -> int:
        return self._final("number_of_executed_units")

    @property
    def per_second(self) -> int:
        return self._final("average_exec_per_sec")

    @property
    def coverage(self) -> int:
        """Edges of our (instrumented) code covered, from libFuzzer's last status line."""
        found = re.findall(r"\bcov: (\d+)", self.log)
        return int(found[-1]) if found else 0

    @property
    def corpus(self) -> str:
        found = re.findall(r"\bcorp: (\d+/\d+\w*)", self.log)
        return found[-1] if found else "?"

    @property
    def deep_share(self) -> float:
        total = sum(self.stages.values())
        deep = sum(count for stage, count in self.stages.items() if stage in self.deep)
        return deep / total if total else 0.0

    def failure(self) -> str:
        """Why the run failed: its exit code, Python's words (stdout), libFuzzer's (stderr)."""
        said = [line for line in self.log.splitlines() if not line.startswith("#")]
        return "\n".join([f"exit code {self.returncode}", self.printed[-3000:], *said[-40:]])

    def row(self) -> str:
        return (
            f"{self.name:20} {self.executions:10,} {self.per_second:7,}/s {self.coverage:5} "
            f"{self.corpus:>11} {100 * self.deep_share:6.1f}%"
        )


HEADER = f"{'target':20} {'executions':>10} {'rate':>9} {'cov':>5} {'corpus':>11} {'deep':>7}"


def run_child(name: str, seconds: float, work: Path, *, corpus: Path | None = None) -> RunResult:
    """Fuzz `name` for `seconds` in a child process; its stats and any crash go to `work`,
    its corpus grows in `corpus` (default: in `work`)."""
    work.mkdir(parents=True, exist_ok=True)
    stats = work / f"{name}-stats.json"
    corpus = corpus if corpus is not None else work / f"{name}-corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "tests.fuzz",
        name,
        "--stats",
        str(stats),
        f"-max_total_time={seconds:g}",
        "-print_final_stats=1",
        "-timeout=20",
        "-rss_limit_mb=1024",
        f"-artifact_prefix={work}/{name}-",
        str(corpus),
        str(SEEDS / name),
    ]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 120, check=False
    )
    report = json.loads(stats.read_text(encoding="utf-8")) if stats.exists() else {}
    return RunResult(
        name,
        done.returncode,
        done.stdout,
        done.stderr,
        report.get("stages", {}),
        report.get("deep", []),
    )


# The modules each target is about, for the line coverage its corpus reaches.
COVERED = {
    "frame_decoder": ["peerchat/protocol/framing.py"],
    "message_decoder": ["peerchat/protocol/messages.py"],
    "hello_payload": ["peerchat/protocol/channel.py"],
    "beacon": ["peerchat/protocol/beacon.py"],
    "established_channel": ["peerchat/protocol/channel.py", "peerchat/protocol/messages.py"],
    "node_messages": ["peerchat/delivery.py", "peerchat/ui/menu.py"],
}


def line_coverage(name: str, folders: list[Path]) -> dict[str, float]:
    """Replay every input in `folders` through `name` in a child process under coverage.py
    (a dependency of mutmut); the share of lines run, per module the target is about."""
    script = (
        "import json, sys, coverage\n"
        "from pathlib import Path\n"
        "cov = coverage.Coverage(data_file=None, branch=False)\n"
        "cov.start()\n"
        "from tests.fuzz.targets import TARGETS\n"
        "target = TARGETS[sys.argv[1]]()\n"
        "for folder in sys.argv[3:]:\n"
        "    for file in sorted(Path(folder).iterdir()):\n"
        "        if file.is_file():\n"
        "            target.run(file.read_bytes())\n"
        "cov.stop()\n"
        "shares = {}\n"
        "for module in json.loads(sys.argv[2]):\n"
        "    _, lines, _, missing, _ = cov.analysis2(module)\n"
        "    shares[module] = 1 - len(missing) / len(lines)\n"
        "print(json.dumps(shares))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, name, json.dumps(COVERED[name]), *map(str, folders)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    shares: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return shares


def run_all(names: list[str], seconds: float) -> int:
    print(f"{HEADER}  lines of the modules it is about (its corpus replayed)")
    failed = 0
    for name in names:
        corpus = WORK / "corpus" / name
        result = run_child(name, seconds, WORK / "runs", corpus=corpus)
        try:
            shares = line_coverage(name, [corpus, SEEDS / name])
            lines = ", ".join(f"{Path(m).stem} {100 * v:.0f}%" for m, v in shares.items())
        except (subprocess.CalledProcessError, ImportError) as exc:
            lines = f"(no line coverage: {exc})"
        print(f"{result.row()}  {lines}", flush=True)
        if result.returncode != 0:
            failed += 1
            print(result.failure(), file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours = [a for a in argv if not a.startswith("-") or a.startswith("--")]
    if not argv:
        print(__doc__)
        print("targets:", ", ".join(NAMES))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", nargs="?", choices=NAMES)
    parser.add_argument("--all", action="store_true", help="every target in turn")
    parser.add_argument("--seconds", type=float, default=60.0, help="per target, with --all")
    parser.add_argument("--stats", type=Path, help="write the stages reached here")
    parser.add_argument("--replay", nargs="+", metavar="FILE", help="run these inputs once")
    parser.add_argument("--write-seeds", action="store_true")
    args, libfuzzer = parser.parse_known_args(ours)
    libfuzzer += [a for a in argv if a.startswith("-") and not a.startswith("--")]
    if args.write_seeds:
        return write_seeds()
    if args.all:
        return run_all(list(NAMES), args.seconds)
    if args.target is None:
        parser.error("name a target, or --all")
    if args.replay:
        return replay(args.target, args.replay)
    fuzz(args.target, args.stats, libfuzzer)
    return 0


if __name__ == "__main__":
    sys.exit(main())

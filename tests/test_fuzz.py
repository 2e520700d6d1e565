"""A short run of every coverage-guided fuzz target (tests/fuzz) inside the suite.

Each target fuzzes for PEER_CHAT_FUZZ_SECONDS (default 3) in a child process,
since libFuzzer takes over the process it runs in. The run must end without a
crash, with coverage feedback working and with inputs past the cheap checks.
docs/TESTING.md says how to fuzz for hours by hand.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.fuzz import NAMES
from tests.support import cannot_set_up

if TYPE_CHECKING:
    from tests.fuzz.__main__ import RunResult

SECONDS = float(os.environ.get("PEER_CHAT_FUZZ_SECONDS", "3"))
SEEDS = Path(__file__).resolve().parent / "fuzz" / "corpus"


@pytest.fixture(scope="module")
def short_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RunResult]:
    """Every target fuzzed for SECONDS, as many at once as there are CPUs."""
    try:
        import atheris  # noqa: F401
    except ImportError:
        cannot_set_up("atheris is not installed (pip install -r requirements-test.txt)")
    from tests.fuzz.__main__ import run_child

    folder = tmp_path_factory.mktemp("fuzz")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        runs = {name: pool.submit(run_child, name, SECONDS, folder / name) for name in NAMES}
        return {name: run.result() for name, run in runs.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_a_short_fuzz_run_finds_nothing(name: str, short_runs: dict[str, RunResult]) -> None:
    result = short_runs[name]
    assert result.returncode == 0, result.failure()
    assert result.executions > 10, result.failure()
    assert result.coverage > 0, "no coverage feedback: is the code under test instrumented?"
    deep = sum(count for stage, count in result.stages.items() if stage in result.deep)
    assert deep > 0, f"no input got past the cheap checks: {result.stages}"
    print(result.row())


def test_the_stored_seeds_are_the_ones_the_targets_define() -> None:
    from tests.fuzz.targets import STORED_SEEDS

    for name in NAMES:
        stored = sorted(path.read_bytes() for path in (SEEDS / name).iterdir())
        assert stored == sorted(STORED_SEEDS[name]), "run python -m tests.fuzz --write-seeds"


@pytest.mark.parametrize("name", NAMES)
def test_every_seed_gets_past_the_cheap_checks(name: str) -> None:
    """A seed that the code under test refuses at once (after a protocol change, say)
    would leave the fuzzer to rediscover the format from nothing."""
    from tests.fuzz.targets import STORED_SEEDS, TARGETS

    target = TARGETS[name]()
    for seed in [*STORED_SEEDS[name], *target.runtime_seeds()]:
        stage = target.run(seed)
        assert stage in target.DEEP or name in ("hello_payload", "beacon"), (seed, stage)

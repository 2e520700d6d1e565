"""A short run of every protocol fuzz target (tests/fuzz_targets.py) inside the suite.

Set PEER_CHAT_FUZZ_SECONDS to fuzz longer per target; `python -m tests.fuzz_targets`
runs the same targets by hand for as long as you like.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz_targets import TARGETS, run, run_one

SECONDS = float(os.environ.get("PEER_CHAT_FUZZ_SECONDS", "2"))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_mutation_fuzzing_finds_nothing_but_protocol_errors(name: str) -> None:
    assert run(name, SECONDS, seed=0) > 100  # it really ran


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_random_bytes_raise_nothing_but_protocol_errors(name: str) -> None:
    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(st.binary(max_size=512))
    def check(data: bytes) -> None:
        run_one(TARGETS[name], data)

    check()

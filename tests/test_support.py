"""The test helpers' own rules that the suite relies on."""

from __future__ import annotations

import pytest

from tests.support import cannot_set_up


def test_a_missing_capability_skips_outside_ci_and_fails_with_the_reason_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        cannot_set_up("needs root")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="needs root"):
        cannot_set_up("needs root")

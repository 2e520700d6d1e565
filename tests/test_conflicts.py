"""Key conflicts, bounded: a flood of throwaway keys under a pinned name."""

from __future__ import annotations

from peerchat.events import KeyConflict
from peerchat.policy.conflicts import (
    MAX_NAMES,
    MAX_PER_NAME,
    WARNING_INTERVAL,
    WARNINGS_PER_INTERVAL,
    ConflictBook,
)

PINNED = "P" * 52


def conflict(n: int, name: str = "Alice", pinned: str = PINNED) -> KeyConflict:
    return KeyConflict(name, "10.0.0.9", 5000, pinned, f"{n:052d}", b"")


def test_800_throwaway_keys_give_one_warning_and_a_few_entries() -> None:
    book = ConflictBook()
    warnings = [book.add(conflict(n), now=n * 0.01) for n in range(800)]
    said = [w for w in warnings if w is not None]
    assert len(said) == 1 and said[0].more == 0
    assert len(book.conflicts()) == MAX_PER_NAME
    assert book.not_listed() == 800 - MAX_PER_NAME
    # The next warning, after the interval, says how many were held back.
    later = book.add(conflict(800), now=8.0 + WARNING_INTERVAL)
    assert later is not None and later.more == 799


def test_the_same_key_again_is_not_said_again() -> None:
    book = ConflictBook()
    assert book.add(conflict(1), now=0.0) is not None
    assert book.add(conflict(1), now=WARNING_INTERVAL * 2) is None


def test_warnings_about_many_names_are_capped_and_names_are_bounded() -> None:
    book = ConflictBook()
    said = [book.add(conflict(n, name=f"N{n}"), now=0.0) for n in range(MAX_NAMES * 2)]
    assert sum(w is not None for w in said) == WARNINGS_PER_INTERVAL
    assert len(book.conflicts()) == MAX_NAMES


def test_the_pinned_key_seen_again_clears_its_conflicts() -> None:
    book = ConflictBook()
    book.add(conflict(1), now=0.0)
    book.add(conflict(2, name="Bob", pinned="Q" * 52), now=0.0)
    cleared = book.pinned_seen(PINNED)
    assert [c.presented_fingerprint for c in cleared] == [f"{1:052d}"]
    assert [c.name for c in book.conflicts()] == ["Bob"]

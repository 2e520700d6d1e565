"""Trust on first use: the first key seen under a name is pinned to it.

Pure: the caller passes the current pins (pin_key(name) -> fingerprint) and
stores any new pin itself. The rules, in order:

1. The name's pin holds this fingerprint: KNOWN.
2. The name's pin holds another fingerprint: CHANGED, even if this
   fingerprint is pinned under some other name. Taking over a pinned name
   with a different key is exactly the impersonation TOFU exists to flag.
3. No pin for the name, but the fingerprint is pinned under another name:
   KNOWN (the peer renamed itself; its key is what it is).
4. Otherwise: NEW.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from functools import cache
from typing import Final

from peerchat.policy.confusables_table import PROTOTYPES
from peerchat.policy.sanitize import drop_default_ignorable


class Verdict(Enum):
    NEW = "new"
    KNOWN = "known"
    CHANGED = "changed"


@dataclass(frozen=True)
class TrustDecision:
    verdict: Verdict
    name: str
    fingerprint: str
    pinned_fingerprint: str | None  # what the pin for this name holds (None: no pin)


# NFKC, case folding and the confusable mapping feed each other (a Lisu letter's
# prototype is a capital B, whose case fold is b; a prototype can hold a
# subscript digit, whose NFKC is a digit): repeat them until nothing changes.
# Three rounds settle every character of the table; the bound only guards
# against a table that would not settle.
_MAX_FOLD_ROUNDS: Final = 4


@cache
def _prototypes() -> dict[int, str]:
    table: dict[int, str] = {}
    for line in PROTOTYPES.splitlines():
        source, _, prototype = line.partition(" ")
        table[int(source, 16)] = "".join([chr(int(code, 16)) for code in prototype.split()])
    return table


def skeleton(text: str) -> str:
    """The confusable skeleton of Unicode UTS #39: strings that look alike share it.

    NFD, drop the default-ignorable (invisible) code points, replace each
    character by its prototype, NFD again.
    """
    visible = drop_default_ignorable(unicodedata.normalize("NFD", text))
    return unicodedata.normalize("NFD", visible.translate(_prototypes()))


def _legacy_pin_key(name: str) -> str:
    # The pin key of history schema 1: NFKC, case folded, runs of white space as one space.
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def rekey_legacy_pin(key: str) -> str:
    """The pin key for a key stored by history schema 1 (pin_key factors through it)."""
    for _ in range(_MAX_FOLD_ROUNDS):
        folded = " ".join(skeleton(unicodedata.normalize("NFKC", key)).casefold().split())
        if folded == key:
            break
        key = folded
    return key


def pin_key(name: str) -> str:
    """The normalized name used as the pin key: names that look alike share one.

    NFKC folds compatibility forms (full-width letters, ligatures), casefold()
    folds case, runs of white space count as one space, invisible characters
    count as nothing, and the UTS #39 skeleton maps look-alikes from any
    script to one prototype: "Alice", "ALICE", "\u0410lice" (Cyrillic A) and
    "Alice" followed by a Hangul filler share one pin, so a newcomer using any
    of them with another key gets CHANGED, not NEW. Case is folded before the
    skeleton, so the capital I that a sans-serif font draws like a small l is
    compared as an i (the fingerprint, shown for unverified peers, tells those
    apart).
    """
    return rekey_legacy_pin(_legacy_pin_key(name))


def decide(pins: Mapping[str, str], name: str, fingerprint: str) -> TrustDecision:
    """Classify `fingerprint` presenting itself as `name` against the pins."""
    pinned = pins.get(pin_key(name))
    if pinned is None:
        verdict = Verdict.KNOWN if fingerprint in pins.values() else Verdict.NEW
    elif pinned == fingerprint:
        verdict = Verdict.KNOWN
    else:
        verdict = Verdict.CHANGED
    return TrustDecision(verdict, name, fingerprint, pinned)

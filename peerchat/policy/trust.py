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


def pin_key(name: str) -> str:
    """The normalized name used as the pin key.

    NFKC folds compatibility look-alikes (full-width letters, ligatures) and
    casefold() folds case, so "Alice", "ALICE" and a full-width "Alice" share
    one pin, and a newcomer using one of them gets CHANGED, not NEW. Runs of
    white space count as one space. Cross-script confusables (a Cyrillic "a")
    are not folded: the fingerprint, not the name, is the identity.
    """
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


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

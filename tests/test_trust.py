from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crypto_utils import fingerprint_of
from peerchat.policy.trust import TrustDecision, Verdict, decide, pin_key

ALICE = fingerprint_of(b"alice key")
BOB = fingerprint_of(b"bob key")
MALLORY = fingerprint_of(b"mallory key")


def test_first_sight_is_new() -> None:
    decision = decide({}, "Alice", ALICE)
    assert decision == TrustDecision(Verdict.NEW, "Alice", ALICE, None)


def test_same_key_is_known() -> None:
    pins = {pin_key("Alice"): ALICE}
    decision = decide(pins, "Alice", ALICE)
    assert decision.verdict is Verdict.KNOWN
    assert decision.pinned_fingerprint == ALICE


def test_other_key_under_pinned_name_is_changed() -> None:
    pins = {pin_key("Alice"): ALICE}
    decision = decide(pins, "Alice", MALLORY)
    assert decision.verdict is Verdict.CHANGED
    assert decision.pinned_fingerprint == ALICE
    assert decision.fingerprint == MALLORY


def test_rename_keeps_trust() -> None:
    pins = {pin_key("Bob"): BOB}
    decision = decide(pins, "Robert", BOB)
    assert decision.verdict is Verdict.KNOWN
    assert decision.pinned_fingerprint is None  # no pin for the new name yet


def test_known_key_taking_over_another_pinned_name_is_changed() -> None:
    # Bob is known, but claiming to be Alice with his own key is impersonation.
    pins = {pin_key("Alice"): ALICE, pin_key("Bob"): BOB}
    decision = decide(pins, "Alice", BOB)
    assert decision.verdict is Verdict.CHANGED
    assert decision.pinned_fingerprint == ALICE


def test_name_variants_share_one_pin() -> None:
    pins = {pin_key("Alice"): ALICE}
    for variant in ("alice", "ALICE", "  Alice ", "\uff21lice", "\uff21\uff4c\uff49\uff43\uff45"):
        assert pin_key(variant) == "alice"
        assert decide(pins, variant, MALLORY).verdict is Verdict.CHANGED
    assert pin_key("Mary  Ann") == pin_key("mary ann")
    assert pin_key("Straße") == pin_key("STRASSE")


def test_distinct_names_have_distinct_pins() -> None:
    pins = {pin_key("Alice"): ALICE}
    assert decide(pins, "Alice2", MALLORY).verdict is Verdict.NEW


names = st.text(alphabet=st.characters(categories=["L", "N", "Zs"]), min_size=1, max_size=32)
fps = st.sampled_from([ALICE, BOB, MALLORY])


@given(pins=st.dictionaries(names.map(pin_key), fps, max_size=5), name=names, fp=fps)
def test_decide_matches_the_rules(pins: dict[str, str], name: str, fp: str) -> None:
    decision = decide(pins, name, fp)
    pinned = pins.get(pin_key(name))
    assert decision.pinned_fingerprint == pinned
    assert decision.name == name
    assert decision.fingerprint == fp
    if pinned == fp:
        assert decision.verdict is Verdict.KNOWN
    elif pinned is not None:
        assert decision.verdict is Verdict.CHANGED
    elif fp in pins.values():
        assert decision.verdict is Verdict.KNOWN
    else:
        assert decision.verdict is Verdict.NEW


@given(name=names)
def test_pin_key_is_idempotent(name: str) -> None:
    assert pin_key(pin_key(name)) == pin_key(name)

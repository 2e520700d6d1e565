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


# -- look-alike names (Unicode UTS #39 confusable skeletons) -------------------------------

LOOKALIKES_OF_ALICE = [
    "Alice",
    "ALICE",
    "\u0410lice",  # Cyrillic capital A
    "\u0430lice",  # Cyrillic small a
    "Alice\u3164",  # Hangul filler: renders as nothing
    "Alice\u1160",  # Hangul jungseong filler
    "Alice\uffa0",  # halfwidth Hangul filler
    "\u115fAlice",  # Hangul choseong filler
    "Al\u200bice",  # zero width space
    "Ali\u0441e",  # Cyrillic small es
    "\ua4eelice",  # Lisu letter A
    "\U0001d400lice",  # mathematical bold capital A
]


def test_lookalike_names_share_one_pin() -> None:
    keys = {variant: pin_key(variant) for variant in LOOKALIKES_OF_ALICE}
    assert set(keys.values()) == {pin_key("Alice")}, keys


def test_a_lookalike_name_with_another_key_is_changed() -> None:
    pins = {pin_key("Alice"): ALICE}
    for variant in LOOKALIKES_OF_ALICE:
        assert decide(pins, variant, MALLORY).verdict is Verdict.CHANGED, ascii(variant)


def test_lookalike_digits_and_letters_share_a_pin() -> None:
    assert pin_key("B0b") == pin_key("BOB")  # digit zero and capital O
    assert pin_key("Pau1") == pin_key("paul")  # digit one and small L
    assert pin_key("\ua4d0ob") == pin_key("Bob")  # Lisu letter BA is a capital B


def test_names_that_do_not_look_alike_keep_their_own_pins() -> None:
    for one, other in [("Alice", "Alicia"), ("Bob", "Rob"), ("Eve", "Eva"), ("Anna", "Ana")]:
        assert pin_key(one) != pin_key(other)


def test_pin_key_is_idempotent_over_the_whole_table() -> None:
    from peerchat.policy.confusables_table import PROTOTYPES

    for line in PROTOTYPES.splitlines():
        char = chr(int(line.split()[0], 16))
        for name in (char, char.upper(), f"a{char}b"):
            key = pin_key(name)
            assert pin_key(key) == key, ascii(name)

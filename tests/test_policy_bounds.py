"""Small pure decisions at their exact bounds: upkeep, quota, what may be dialled,
conflicts, the session table, saved file names, rows on a terminal, the address book.

Their own test files check the behaviour; these pin each comparison at the value where
it turns, and the exact words and figures the user reads."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pytest

from peerchat.events import KeyConflict
from peerchat.policy.address_book import AddressBook, Found, Source, sources_text
from peerchat.policy.conflicts import (
    MAX_NAMES,
    MAX_PER_NAME,
    WARNING_INTERVAL,
    WARNINGS_PER_INTERVAL,
    ConflictBook,
    Warning,
)
from peerchat.policy.dialable import is_host_name, parse_address, refusal
from peerchat.policy.filenames import MAX_EXTENSION_CHARS, numbered_name, safe_file_name
from peerchat.policy.quota import HOUR, VERIFIED_FACTOR, QuotaLimits, ReceiveQuota
from peerchat.policy.session_table import AdmissionLimits, SessionTable, preferred
from peerchat.policy.upkeep import Upkeep, UpkeepLimits, upkeep
from peerchat.protocol.channel import Role
from peerchat.text import CONTINUATION, display_safe, fit_rows

LIMITS = UpkeepLimits(peer_timeout=90.0, idle_timeout=600.0, ping_interval=20.0)
NOW = 10_000.0


@pytest.mark.parametrize(
    ("silent", "expected"),
    [(90.0, Upkeep.PING), (90.5, Upkeep.FAIL)],
)
def test_a_session_fails_only_when_silent_past_the_peer_timeout(
    silent: float, expected: Upkeep
) -> None:
    assert upkeep(LIMITS, NOW, NOW - silent, NOW, NOW - 100.0) is expected


@pytest.mark.parametrize(
    ("quiet", "expected"),
    [(600.0, Upkeep.NOTHING), (600.5, Upkeep.CLOSE_IDLE)],
)
def test_a_session_is_closed_idle_only_past_the_idle_timeout(
    quiet: float, expected: Upkeep
) -> None:
    assert upkeep(LIMITS, NOW, NOW, NOW - quiet, NOW) is expected


def test_a_ping_goes_only_when_silent_and_unpinged_past_the_interval() -> None:
    every = LIMITS.ping_every
    assert every == 20.0
    assert upkeep(LIMITS, NOW, NOW - every, NOW, NOW - 50.0) is Upkeep.NOTHING
    assert upkeep(LIMITS, NOW, NOW - every - 0.5, NOW, NOW - every) is Upkeep.NOTHING
    assert upkeep(LIMITS, NOW, NOW - every - 0.5, NOW, NOW - every - 0.5) is Upkeep.PING


def test_quota_limits_are_said_in_mebibytes() -> None:
    assert QuotaLimits(200, 3 * 1024 * 1024).describe() == "at most 200 messages and 3 MiB an hour"
    assert QuotaLimits(5_000, 512 * 1024).describe() == "at most 5,000 messages and 0.5 MiB an hour"


def test_a_verified_peer_gets_ten_times_both_budgets() -> None:
    quota = ReceiveQuota(QuotaLimits(10, 1000))
    assert quota.limits_for(True) == QuotaLimits(10 * VERIFIED_FACTOR, 1000 * VERIFIED_FACTOR)
    assert quota.limits_for(False) == QuotaLimits(10, 1000)


def test_a_message_that_fits_the_bytes_left_exactly_is_admitted() -> None:
    quota = ReceiveQuota(QuotaLimits(10, 100))
    assert quota.admit("a", [60, 40, 1], verified=False, now=0.0) == 2


def test_budgets_refill_in_proportion_to_the_time_passed() -> None:
    quota = ReceiveQuota(QuotaLimits(3600, 3600 * 1000))  # bytes to spare: messages count
    assert quota.admit("a", [1] * 3600, verified=False, now=1000.0) == 3600
    assert quota.admit("a", [1] * 100, verified=False, now=1010.0) == 10  # 1 a second
    assert quota.admit("a", [1] * 100, verified=False, now=1010.5) == 0
    # A clock that goes back refills nothing.
    assert quota.admit("a", [1] * 100, verified=False, now=500.0) == 0
    assert quota.admit("a", [1] * 100, verified=False, now=1000.0 + HOUR) == 100


def test_byte_budgets_refill_in_proportion_to_the_time_passed() -> None:
    quota = ReceiveQuota(QuotaLimits(10_000, 3600))
    assert quota.admit("a", [3600], verified=False, now=0.0) == 1
    assert quota.admit("a", [30, 1], verified=False, now=30.0) == 1


def test_the_peer_pushed_out_of_the_table_is_the_least_recently_seen() -> None:
    quota = ReceiveQuota(QuotaLimits(1, 100), max_tracked=2)
    assert quota.admit("a", [1], verified=False, now=0.0) == 1
    assert quota.admit("b", [1], verified=False, now=0.0) == 1
    assert quota.admit("c", [1], verified=False, now=0.0) == 1  # pushes out "a"
    assert quota.admit("c", [1], verified=False, now=0.0) == 0  # "c" is still charged
    assert quota.admit("a", [1], verified=False, now=0.0) == 1  # "a" starts again, full


# -- what may be dialled ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61, True),  # 253 characters
        ("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61 + ".", True),  # and a dot
        ("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 62, False),  # 254
        ("host.lan.", True),
        ("ab.", True),
        (".", False),
        ("", False),
        ("host..", False),
        ("1a.", True),  # without its final dot only: a last label of "1" is a number
        ("12a", True),
    ],
)
def test_host_names_at_their_length_bound_and_with_a_final_dot(text: str, valid: bool) -> None:
    assert is_host_name(text) is valid


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("[::1]", "::1"),
        ("[fe80::12]", "fe80::12"),
        ("::1", "::1"),
        ("127.0.0.1", "127.0.0.1"),
    ],
)
def test_an_address_may_be_typed_in_brackets(text: str, address: str) -> None:
    assert parse_address(text) == ipaddress.ip_address(address)


@pytest.mark.parametrize("text", ["[::12", "1::1]", "[127.0.0.1", "[[::1]]"])
def test_half_a_bracket_pair_is_not_an_address(text: str) -> None:
    assert parse_address(text) is None


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("224.0.0.1", "it is a multicast address, not a peer's"),
        ("ff02::1", "it is a multicast address, not a peer's"),
        ("0.1.2.3", "addresses in 0.0.0.0/8 reach no host"),
        ("255.255.255.255", "it is a broadcast address, not a peer's"),
        ("::", "the unspecified address reaches no host"),
        ("::ffff:0.0.0.5", "addresses in 0.0.0.0/8 reach no host"),
    ],
)
def test_refusals_word_for_word(address: str, why: str) -> None:
    assert refusal(ipaddress.ip_address(address)) == why


def test_a_directed_broadcast_of_this_host_is_refused() -> None:
    assert refusal(ipaddress.ip_address("10.1.255.255"), ["10.1.255.255"]) == (
        "it is a broadcast address, not a peer's"
    )
    assert refusal(ipaddress.ip_address("10.1.255.255"), ["10.2.255.255"]) is None


# -- key conflicts ----------------------------------------------------------------------

PINNED = "P" * 52


def conflict(n: int, name: str = "Alice") -> KeyConflict:
    return KeyConflict(name, "10.0.0.9", 5000, PINNED, f"{n:052d}", b"")


def test_a_warning_names_the_conflict_it_is_about() -> None:
    book = ConflictBook()
    assert book.add(conflict(1), now=0.0) == Warning(conflict(1), 0)


def test_a_name_is_warned_about_again_at_exactly_the_interval() -> None:
    book = ConflictBook()
    assert book.add(conflict(1), now=100.0) is not None
    assert book.add(conflict(2), now=110.0) is None
    assert book.add(conflict(3), now=100.0 + WARNING_INTERVAL - 0.5) is None
    assert book.add(conflict(4), now=100.0 + WARNING_INTERVAL) == Warning(conflict(4), 2)


def test_the_cap_on_all_warnings_frees_a_place_at_exactly_the_interval() -> None:
    book = ConflictBook()
    for n in range(WARNINGS_PER_INTERVAL):
        assert book.add(conflict(n, f"name{n}"), now=100.0 + n) is not None
    assert book.add(conflict(50, "late"), now=110.0) is None
    assert book.add(conflict(51, "later"), now=100.0 + WARNING_INTERVAL) is not None


def test_the_oldest_name_and_the_oldest_key_of_a_name_are_the_ones_dropped() -> None:
    book = ConflictBook()
    for n in range(MAX_PER_NAME + 1):
        book.add(conflict(n), now=0.0)
    assert book.conflicts() == [conflict(n) for n in range(1, MAX_PER_NAME + 1)]
    names = ConflictBook()
    for n in range(MAX_NAMES + 1):
        names.add(conflict(n, f"name{n}"), now=0.0)
    kept = {c.name for c in names.conflicts()}
    assert "name0" not in kept and f"name{MAX_NAMES}" in kept and len(kept) == MAX_NAMES


def test_a_conflict_is_taken_out_by_the_key_presented() -> None:
    book = ConflictBook()
    book.add(conflict(1), now=0.0)
    book.add(conflict(2), now=0.0)
    assert book.pop(conflict(2).presented_fingerprint) == conflict(2)
    assert book.conflicts() == [conflict(1)]
    assert book.pop("9" * 52) is None


# -- the session table ------------------------------------------------------------------

ME = "M" * 52


@dataclass(eq=False)
class Conn:
    role: Role
    remote_ip: str = "10.0.0.1"
    established: bool = False


def sessions(per_address: int = 2, pending: int = 10) -> SessionTable[Conn]:
    return SessionTable(ME, AdmissionLimits(100, per_address, pending, 2))


def test_an_address_over_its_share_is_refused_in_words_and_the_count_is_per_address() -> None:
    t = sessions(per_address=2)
    first, second = Conn(Role.RESPONDER), Conn(Role.RESPONDER)
    assert t.admit(first) is None
    assert t.admit(Conn(Role.RESPONDER, "10.0.0.2")) is None
    assert t.admit(second) is None
    assert t.admit(Conn(Role.RESPONDER)) == "too many connections from that address"
    t.remove(first, None)
    t.remove(first, None)  # removed twice: counted once
    assert t.admit(Conn(Role.RESPONDER)) is None
    assert t.admit(Conn(Role.RESPONDER)) == "too many connections from that address"
    t.remove(second, None)
    assert t.admit(Conn(Role.RESPONDER)) is None


def test_an_address_whose_connections_all_closed_has_its_whole_share_again() -> None:
    t = sessions(per_address=1)
    one = Conn(Role.RESPONDER)
    assert t.admit(one) is None
    t.remove(one, None)
    assert t.admit(Conn(Role.RESPONDER)) is None


def test_room_is_made_by_dropping_the_oldest_pending_from_the_busiest_address() -> None:
    t = sessions(per_address=10, pending=4)
    done = Conn(Role.RESPONDER, "10.0.0.7", established=True)  # not pending: never dropped
    quiet = Conn(Role.RESPONDER, "10.0.0.9")
    busy = [Conn(Role.RESPONDER, "10.0.0.1") for _ in range(2)]
    other = Conn(Role.RESPONDER, "10.0.0.3")
    ours = [Conn(Role.INITIATOR, "10.0.0.5") for _ in range(3)]  # our own: never dropped
    for conn in (done, quiet, *busy, other, *ours):
        assert t.admit(conn) is None
    assert t.make_room(Conn(Role.RESPONDER, "10.0.0.4")) == [busy[0]]
    assert busy[0] not in t.connections()
    assert all(conn in t.connections() for conn in (done, quiet, busy[1], other, *ours))


def test_a_live_session_is_the_one_settled_last() -> None:
    t = sessions()
    first, second = Conn(Role.RESPONDER, established=True), Conn(Role.RESPONDER)
    assert t.settle("A" * 52, first).kept is first
    assert t.is_live("A" * 52, first)
    assert not t.is_live("A" * 52, second)
    assert not t.is_live("B" * 52, first)
    settled = t.settle("A" * 52, second)  # same initiator: the older one stays
    assert (settled.kept, settled.dropped) == (first, second)


def test_the_tie_break_keeps_the_session_of_the_smaller_initiator() -> None:
    assert preferred("A" * 52, "B" * 52)
    assert not preferred("B" * 52, "A" * 52)
    assert preferred("A" * 52, "A" * 52)


# -- saved file names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "numbered"),
    [
        ("a.txt", "a (1).txt"),
        ("ab.c", "ab (1).c"),
        (".bashrc", ".bashrc (1)"),  # a leading dot is not an extension
        ("name.", "name. (1)"),  # nor a trailing one
        ("a." + "x" * MAX_EXTENSION_CHARS, "a (1)." + "x" * MAX_EXTENSION_CHARS),
        ("a." + "x" * (MAX_EXTENSION_CHARS + 1), "a." + "x" * (MAX_EXTENSION_CHARS + 1) + " (1)"),
    ],
)
def test_an_extension_is_kept_only_within_its_bounds(name: str, numbered: str) -> None:
    assert numbered_name(name, 1) == numbered


@pytest.mark.parametrize(
    ("offered", "saved"),
    [
        ("CONX.txt", "CONX.txt"),  # only the device name itself is one
        ("CON .txt", "_CON .txt"),
        ("notes/..", "notes"),  # a last part of dots is no name: the one before it is
        ("notes/. .", "notes"),
    ],
)
def test_device_names_and_empty_last_parts(offered: str, saved: str) -> None:
    assert safe_file_name(offered) == saved


# -- lines cut to the terminal's width --------------------------------------------------


@pytest.mark.parametrize(
    ("line", "columns", "rows"),
    [
        ("a" * 20, 21, ["a" * 20]),  # exactly the width less one column: one row
        ("a" * 21, 21, ["a" * 20, CONTINUATION + "a"]),
        ("a" * 20, 5, ["a" * 12, CONTINUATION + "a" * 8]),  # never narrower than 12
        ("中" * 10, 13, ["中" * 6, CONTINUATION + "中" * 4]),  # wide: two cells each
        ("\uff21" * 7, 13, ["\uff21" * 6, CONTINUATION + "\uff21"]),  # fullwidth A too
        ("e\u0301" * 12, 13, ["e\u0301" * 12]),  # a combining accent takes no cell
        ("a\u034f" * 12, 13, ["a\u034f" * 12]),  # nor a mark of combining class 0
        ("a\u20dd" * 12, 13, ["a\u20dd" * 12]),  # nor an enclosing mark
        ("a\u200d" * 12, 13, ["a\u200d" * 12]),  # nor a joiner
    ],
)
def test_a_line_is_cut_into_rows_by_the_cells_it_takes(
    line: str, columns: int, rows: list[str]
) -> None:
    assert fit_rows(line, columns) == "\n".join(rows)


@pytest.mark.parametrize(
    ("text", "shown"), [("a\u00a0b", "a\\xa0b"), ("a\u3000b", "a\\u3000b"), ("a b", "a b")]
)
def test_a_space_other_than_the_ascii_one_is_shown_by_its_code(text: str, shown: str) -> None:
    assert display_safe(text) == shown


# -- the address book's dial budget and its words ----------------------------------------


def test_the_next_dial_waits_for_the_budget_to_refill() -> None:
    book = AddressBook(dial_rate=0.5, dial_burst=1.0)
    book.add_seed(("10.0.0.1", 5000))
    book.add_seed(("10.0.0.2", 5000))
    assert len(book.due(0.0, [])) == 1  # the burst is one dial
    assert book.next_due(0.0, []) == 2.0  # one dial's worth at half a dial a second
    assert book.due(1.0, []) == []  # half a dial's worth so far
    assert book.next_due(1.0, []) == 2.0


@pytest.mark.parametrize(
    ("source", "said"),
    [
        (Source(Found.EXCHANGE), "via ?"),
        (Source(Found.EXCHANGE, via="abcdefghijk"), "via abcdefgh"),
        (Source(Found.EXCHANGE, via="abcdefghijk", via_name="Bob"), "via Bob"),
        (Source(Found.MDNS), "mDNS"),
    ],
)
def test_how_an_address_was_found_is_said_in_a_few_words(source: Source, said: str) -> None:
    assert source.describe() == said


def test_no_source_is_a_dash() -> None:
    assert sources_text([]) == "-"
    assert sources_text(["seed", "via Bob"]) == "seed, via Bob"


def test_claims_and_confirmed_addresses_are_listed_most_recent_first() -> None:
    fp = "F" * 52
    book = AddressBook(max_confirmed_per_key=2)
    book.claim(fp, ("10.0.0.2", 5000), Source(Found.BROADCAST), 1.0)
    book.claim(fp, ("10.0.0.1", 5000), Source(Found.MDNS), 2.0)
    assert book.claimed(fp) == [
        (("10.0.0.1", 5000), Source(Found.MDNS)),
        (("10.0.0.2", 5000), Source(Found.BROADCAST)),
    ]
    book.confirm(fp, ("10.0.0.9", 5000), 3.0, Source(Found.TYPED))
    book.confirm(fp, ("10.0.0.1", 5001), 4.0, Source(Found.SEED))
    assert book.addresses(fp) == [("10.0.0.1", 5001), ("10.0.0.9", 5000)]
    assert book.sources(fp) == [
        Source(Found.SEED),
        Source(Found.TYPED),
        Source(Found.MDNS),
        Source(Found.BROADCAST),
    ]
    # A third confirmed address pushes out the one that worked longest ago.
    book.confirm(fp, ("10.0.0.5", 5000), 5.0, Source(Found.INBOUND))
    assert book.addresses(fp) == [("10.0.0.5", 5000), ("10.0.0.1", 5001)]
    # Confirmed again, an address takes the source the node knows better.
    book.confirm(fp, ("10.0.0.1", 5001), 6.0, Source(Found.TYPED))
    assert book.sources(fp)[:2] == [Source(Found.TYPED), Source(Found.INBOUND)]

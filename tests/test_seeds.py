"""Seed peers: `--peer HOST:PORT` parsed, resolved with a bound, remembered, removed (option 10)."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from peerchat.limits import MAX_SEEDS
from peerchat.net.seeds import SeedLookupError, SeedStore, StoredSeed, resolve_seed, resolve_seeds
from peerchat.policy.seed_address import Seed, parse_seed
from peerchat.ui.menu import format_seed
from tests.support import free_tcp_port, run_cli

FP = "A" * 52


# -- parsing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seed"),
    [
        ("10.0.0.5:5000", Seed("10.0.0.5", 5000)),
        (" 127.0.0.1:1 ", Seed("127.0.0.1", 1)),
        ("alice-laptop.local:65535", Seed("alice-laptop.local", 65535)),
        ("localhost:5000", Seed("localhost", 5000)),
        ("host.example.:5000", Seed("host.example.", 5000)),
    ],
)
def test_seed_addresses_that_parse(text: str, seed: Seed) -> None:
    assert parse_seed(text) == seed
    assert str(seed) == f"{seed.host}:{seed.port}"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("10.0.0.5", "expected HOST:PORT"),
        (":5000", "expected HOST:PORT"),
        ("10.0.0.5:", "the port must be a number"),
        ("10.0.0.5:http", "the port must be a number"),
        ("10.0.0.5:-1", "the port must be a number"),
        ("10.0.0.5:\u0665\u0660\u0660\u0660", "the port must be a number"),  # Arabic-Indic 5000
        ("10.0.0.5:0", "port 0 is not from 1 to 65535"),
        ("10.0.0.5:65536", "port 65536 is not from 1 to 65535"),
        ("[::1]:5000", "IPv6"),
        ("fe80::1:5000", "IPv6"),
        ("999.1.1.1:5000", "not an IPv4 address or host name"),
        ("bad_name.lan:5000", "not an IPv4 address or host name"),
        ("-bad.lan:5000", "not an IPv4 address or host name"),
        ("a\nb.lan:5000", "not an IPv4 address or host name"),
        ("x" * 64 + ".lan:5000", "not an IPv4 address or host name"),
    ],
)
def test_seed_addresses_that_do_not_parse_say_why_in_one_line(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as caught:
        parse_seed(text)
    assert "\n" not in str(caught.value).replace(repr(text), "")


# -- resolving -----------------------------------------------------------------------


def no_lookup(host: str, port: int) -> str:
    raise AssertionError(f"{host} must not be looked up")


def test_addresses_localhost_and_invalid_names_need_no_lookup() -> None:
    assert resolve_seed(Seed("10.0.0.5", 5000), resolver=no_lookup) == "10.0.0.5"
    assert resolve_seed(Seed("localhost", 5000), resolver=no_lookup) == "127.0.0.1"
    with pytest.raises(SeedLookupError, match=re.escape("'no-such-host.invalid': name not found")):
        resolve_seed(Seed("no-such-host.invalid", 5000), resolver=no_lookup)


def test_a_name_is_resolved_to_ipv4() -> None:
    asked: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> str:
        asked.append((host, port))
        return "127.0.0.9"

    assert resolve_seed(Seed("alice.lan", 5000), resolver=resolver) == "127.0.0.9"
    assert asked == [("alice.lan", 5000)]


def test_a_failed_lookup_is_one_clear_line() -> None:
    def resolver(host: str, port: int) -> str:
        raise OSError(-2, "Name or service not known")

    with pytest.raises(SeedLookupError) as caught:
        resolve_seed(Seed("alice.lan", 5000), resolver=resolver)
    assert str(caught.value) == "cannot resolve seed peer 'alice.lan': name or service not known"


def test_a_lookup_that_hangs_is_given_up_after_the_timeout() -> None:
    release = threading.Event()

    def resolver(host: str, port: int) -> str:
        release.wait(10)
        return "127.0.0.1"

    started = time.monotonic()
    try:
        with pytest.raises(SeedLookupError, match=re.escape("no answer within 0.2 s")):
            resolve_seed(Seed("slow.lan", 5000), timeout=0.2, resolver=resolver)
    finally:
        release.set()
    assert time.monotonic() - started < 2


def test_resolving_several_stops_at_the_first_that_fails() -> None:
    seeds = [Seed("127.0.0.1", 1), Seed("nowhere.invalid", 2), Seed("127.0.0.2", 3)]
    with pytest.raises(SeedLookupError, match=re.escape("nowhere.invalid")):
        resolve_seeds(seeds, resolver=no_lookup)
    assert resolve_seeds(seeds[::2], resolver=no_lookup) == [
        (seeds[0], "127.0.0.1"),
        (seeds[2], "127.0.0.2"),
    ]


# -- the store -------------------------------------------------------------------------


SEED = Seed("alice.lan", 5000)


def test_given_seeds_are_listed_but_only_reached_ones_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "seeds.json"
    store = SeedStore(path, given=[(SEED, "10.0.0.5"), (Seed("10.0.0.6", 5001), "10.0.0.6")])
    assert [(e.seed, e.address, e.fingerprint) for e in store.seeds()] == [
        (SEED, "10.0.0.5", None),
        (Seed("10.0.0.6", 5001), "10.0.0.6", None),
    ]
    assert not path.exists()
    store.reached(SEED, "10.0.0.5", FP, "Alice", 1_700_000_000.0)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = SeedStore(path)
    assert again.seeds() == [StoredSeed(SEED, "10.0.0.5", FP, "Alice", 1_700_000_000.0)]


def test_a_remembered_seed_given_again_keeps_what_is_known_of_it(tmp_path: Path) -> None:
    path = tmp_path / "seeds.json"
    SeedStore(path).reached(SEED, "10.0.0.5", FP, "Alice", 1.0)
    store = SeedStore(path, given=[(SEED, "10.0.0.7")])
    assert store.seeds() == [StoredSeed(SEED, "10.0.0.7", FP, "Alice", 1.0)]


def test_removing_a_seed_forgets_it_and_tells_the_listeners(tmp_path: Path) -> None:
    path = tmp_path / "seeds.json"
    store = SeedStore(path)
    store.reached(SEED, "10.0.0.5", FP, "Alice", 1.0)
    removed: list[Seed] = []
    store.subscribe(removed.append)
    assert store.remove(SEED)
    assert not store.remove(SEED)
    assert removed == [SEED]
    assert SeedStore(path).seeds() == []


def test_the_number_of_remembered_seeds_is_capped(tmp_path: Path) -> None:
    store = SeedStore(tmp_path / "seeds.json")
    for i in range(MAX_SEEDS + 5):
        store.reached(Seed(f"10.0.1.{i}", 5000), f"10.0.1.{i}", FP, "P", float(i))
    assert len(SeedStore(tmp_path / "seeds.json").seeds()) == MAX_SEEDS


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"version": 2, "seeds": []}',
        b'{"version": 1, "seeds": {}}',
        b"[" * 100_000,
        b" " * (70 * 1024),
    ],
)
def test_a_damaged_store_reads_as_no_seeds(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "seeds.json"
    path.write_bytes(content)
    assert SeedStore(path).seeds() == []


def test_bad_entries_are_skipped_and_good_ones_kept(tmp_path: Path) -> None:
    good = {"host": "alice.lan", "port": 5000, "address": "10.0.0.5", "fingerprint": FP}
    good |= {"name": "Alice", "last_reached": 5.0}
    bad = [
        good | {"port": 0},
        good | {"port": True},
        good | {"host": "a b"},
        good | {"address": "nowhere"},
        good | {"fingerprint": "short"},
        good | {"last_reached": float("nan")},
        good | {"last_reached": None},
        "not a dict",
    ]
    path = tmp_path / "seeds.json"
    path.write_text(json.dumps({"version": 1, "seeds": [*bad, good, good]}))
    assert SeedStore(path).seeds() == [StoredSeed(SEED, "10.0.0.5", FP, "Alice", 5.0)]


def test_option_10_line_for_a_seed() -> None:
    assert format_seed(StoredSeed(SEED, "10.0.0.5", None, None, None)) == (
        "alice.lan:5000 (10.0.0.5): not reached yet"
    )
    line = format_seed(StoredSeed(Seed("10.0.0.5", 5000), "10.0.0.5", FP, "Al\x1b[2Jice", 0.0))
    assert line.startswith("10.0.0.5:5000: Al")
    assert "\x1b" not in line
    assert f"[{FP[:8]}], last reached" in line


# -- the command line --------------------------------------------------------------------


def _one_line_failure(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert needle in lines[0], lines[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("peer", "needle"),
    [
        ("127.0.0.1", "invalid seed peer '127.0.0.1': expected HOST:PORT"),
        ("127.0.0.1:99999", "port 99999 is not from 1 to 65535"),
        ("127.0.0.1:x", "the port must be a number"),
        ("no-such-host.invalid:5000", "cannot resolve seed peer 'no-such-host.invalid'"),
    ],
)
def test_a_bad_seed_is_one_clear_line_and_exit_2(peer: str, needle: str, tmp_path: Path) -> None:
    data = tmp_path / "d"
    args = ["--name", "A", "--port", "5000", "--data-dir", str(data), "--no-discovery"]
    result = run_cli([*args, "--peer", "127.0.0.1:5001", "--peer", peer])
    _one_line_failure(result, needle)
    assert not data.exists()  # refused before the profile was touched


@pytest.mark.slow
def test_seeds_are_listed_and_removed_in_option_10(tmp_path: Path) -> None:
    data = tmp_path / "A"
    data.mkdir(mode=0o700)
    SeedStore(data / "seeds.json").reached(SEED, "10.0.0.5", FP, "Alice", 1_700_000_000.0)
    seed_port = free_tcp_port()  # nothing listens there
    base = ["--name", "A", "--port", str(free_tcp_port()), "--data-dir", str(data)]
    result = run_cli(
        [*base, "--no-discovery", "--peer", f"127.0.0.1:{seed_port}"],
        stdin="10\n1\n10\n\n",
    )
    assert result.returncode == 0, result.stderr
    assert "10. Seed peers" in result.stdout
    listing, after = result.stdout.split("Seed alice.lan:5000 removed", 1)
    assert f"1. alice.lan:5000 (10.0.0.5): Alice [{FP[:8]}], last reached" in listing
    assert f"2. 127.0.0.1:{seed_port}: not reached yet" in listing
    assert f"1. 127.0.0.1:{seed_port}: not reached yet" in after
    assert "alice.lan" not in after
    assert SeedStore(data / "seeds.json").seeds() == []


@pytest.mark.slow
def test_a_seed_flag_is_no_longer_taken_for_another_flag(tmp_path: Path) -> None:
    # argparse once matched --peer as an abbreviation of --peer-timeout.
    result = run_cli(
        [
            "--name",
            "A",
            "--port",
            str(free_tcp_port()),
            "--data-dir",
            str(tmp_path / "A"),
            "--no-discovery",
            "--peer",
            f"127.0.0.1:{free_tcp_port()}",
        ],
        stdin="10\n\n",
    )
    assert result.returncode == 0, result.stderr
    assert "not reached yet" in result.stdout

"""Seed peers: addresses the user gave with `--peer HOST:PORT`, and those kept in the profile.

A seed is an address, not a key: whoever completes a handshake there is who
answered (the address book records which key that was). Seeds given on the
command line are tried from the start; once one has been reached it is
remembered in `seeds.json` in the profile folder and tried again at later
starts without the flag, until the user removes it (menu option 10).

The file holds hints only, like peers.json: it never carries trust. A missing,
unreadable or malformed file reads as no seeds; it is replaced whole,
atomically, at the next write.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from crypto_utils import is_fingerprint, write_file_atomic
from peerchat.limits import MAX_SEEDS, SEED_RESOLVE_TIMEOUT
from peerchat.policy.seed_address import Seed, is_ipv4, parse_seed

log = logging.getLogger(__name__)

STORE_VERSION: Final = 1
MAX_STORE_BYTES: Final = 64 * 1024
_FILE_MODE: Final = 0o600  # the addresses of one's contacts are private


class SeedLookupError(Exception):
    """A seed's host name did not resolve (the message is one line)."""


Resolver = Callable[[str, int], str]


def _getaddrinfo_ipv4(host: str, port: int) -> str:
    infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
    if not infos:
        raise OSError("no IPv4 address")
    return str(infos[0][4][0])


def resolve_seed(
    seed: Seed, timeout: float = SEED_RESOLVE_TIMEOUT, resolver: Resolver = _getaddrinfo_ipv4
) -> str:
    """The IPv4 address to dial for a seed; SeedLookupError if it cannot be had in `timeout`.

    Addresses need no lookup. Names under `.invalid` never resolve and
    `localhost` is loopback (RFC 6761), so neither is asked of the network.
    The lookup runs in a daemon thread, so a resolver that hangs costs at most
    `timeout` and does not keep the program from exiting.
    """
    if is_ipv4(seed.host):
        return seed.host
    name = seed.host.rstrip(".").lower()
    if name == "invalid" or name.endswith(".invalid"):
        raise SeedLookupError(f"cannot resolve seed peer {seed.host!r}: name not found")
    if name == "localhost" or name.endswith(".localhost"):
        return "127.0.0.1"
    result: list[str] = []
    failure: list[str] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            result.append(resolver(seed.host, seed.port))
        except (OSError, UnicodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            failure.append(reason)
        finally:
            done.set()

    threading.Thread(target=lookup, name=f"resolve {seed.host}", daemon=True).start()
    if not done.wait(timeout):
        raise SeedLookupError(
            f"cannot resolve seed peer {seed.host!r}: no answer within {timeout:g} s"
        )
    if failure or not result:
        reason = (failure[0] if failure else "no IPv4 address").rstrip(".").lower()
        raise SeedLookupError(f"cannot resolve seed peer {seed.host!r}: {reason}")
    return result[0]


def resolve_seeds(
    seeds: Sequence[Seed],
    timeout: float = SEED_RESOLVE_TIMEOUT,
    resolver: Resolver = _getaddrinfo_ipv4,
) -> list[tuple[Seed, str]]:
    """Each seed with its address, in order; the first that fails raises SeedLookupError."""
    return [(seed, resolve_seed(seed, timeout, resolver)) for seed in seeds]


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class StoredSeed:
    seed: Seed
    address: str | None  # the IPv4 address it resolved to last (None: not resolved yet)
    fingerprint: str | None  # the key that answered there last (None: not reached yet)
    name: str | None  # ... and the name it gave then
    last_reached: float | None  # unix time; None: given this run and not reached yet


class SeedStore:
    """The seeds of this profile: kept in `seeds.json` once reached; thread-safe.

    The menu thread lists and removes seeds; the network thread reports the
    ones it reached. Removal is announced to every `subscribe`d callback
    (called on the remover's thread).
    """

    def __init__(self, path: Path, given: Sequence[tuple[Seed, str]] = ()) -> None:
        """`given`: this run's seeds from the command line, each with its resolved address."""
        self._path = path
        self._lock = threading.Lock()
        self._entries: dict[Seed, StoredSeed] = {}
        for entry in _read(path):
            self._entries[entry.seed] = entry
        for seed, address in given:
            known = self._entries.get(seed)
            if known is None:
                self._entries[seed] = StoredSeed(seed, address, None, None, None)
            else:
                self._entries[seed] = dataclasses.replace(known, address=address)
        self._listeners: list[Callable[[Seed], None]] = []

    def seeds(self) -> list[StoredSeed]:
        with self._lock:
            return list(self._entries.values())

    def subscribe(self, callback: Callable[[Seed], None]) -> None:
        with self._lock:
            self._listeners.append(callback)

    def reached(self, seed: Seed, address: str, fingerprint: str, name: str, now: float) -> None:
        """A handshake at this seed (resolved to `address`) completed: remember it."""
        with self._lock:
            known = self._entries.get(seed)
            new = known is None or known.last_reached is None
            if new and len(self._remembered()) >= MAX_SEEDS:
                log.warning("not remembering seed %s: %d seeds are kept already", seed, MAX_SEEDS)
                return
            self._entries[seed] = StoredSeed(seed, address, fingerprint, name, now)
            self._write_locked()

    def remove(self, seed: Seed) -> bool:
        with self._lock:
            if self._entries.pop(seed, None) is None:
                return False
            self._write_locked()
            listeners = list(self._listeners)
        for callback in listeners:
            try:
                callback(seed)
            except Exception:
                log.exception("seed removal callback failed")
        return True

    def _remembered(self) -> list[StoredSeed]:
        return [e for e in self._entries.values() if e.last_reached is not None]

    def _write_locked(self) -> None:
        document = {
            "version": STORE_VERSION,
            "seeds": [
                {
                    "host": e.seed.host,
                    "port": e.seed.port,
                    "address": e.address,
                    "fingerprint": e.fingerprint,
                    "name": e.name,
                    "last_reached": e.last_reached,
                }
                for e in self._remembered()
            ],
        }
        data = json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8") + b"\n"
        try:
            write_file_atomic(self._path, data, _FILE_MODE)
        except OSError as exc:
            log.warning("cannot write %s: %s", self._path, exc.strerror or exc)


def _read(path: Path) -> list[StoredSeed]:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_STORE_BYTES + 1)
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("ignoring %s: %s", path, exc.strerror or exc)
        return []
    if len(data) > MAX_STORE_BYTES:
        log.warning("ignoring %s: larger than %d bytes", path, MAX_STORE_BYTES)
        return []
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        log.warning("ignoring %s: not valid JSON", path)
        return []
    if not isinstance(document, dict) or document.get("version") != STORE_VERSION:
        log.warning("ignoring %s: unknown format", path)
        return []
    entries = document.get("seeds")
    if not isinstance(entries, list):
        log.warning("ignoring %s: unknown format", path)
        return []
    found: list[StoredSeed] = []
    for entry in entries[:MAX_SEEDS]:
        stored = _valid(entry)
        if stored is not None and all(stored.seed != f.seed for f in found):
            found.append(stored)
    return found


def _valid(entry: object) -> StoredSeed | None:
    if not isinstance(entry, dict):
        return None
    host, port, address = entry.get("host"), entry.get("port"), entry.get("address")
    fingerprint, name = entry.get("fingerprint"), entry.get("name")
    last_reached = entry.get("last_reached")
    if not isinstance(host, str) or not isinstance(port, int) or isinstance(port, bool):
        return None
    try:
        seed = parse_seed(f"{host}:{port}")
    except ValueError:
        return None
    if address is not None and (not isinstance(address, str) or not is_ipv4(address)):
        return None
    if fingerprint is not None and (
        not isinstance(fingerprint, str) or not is_fingerprint(fingerprint)
    ):
        return None
    if name is not None and (not isinstance(name, str) or len(name) > 200):
        return None
    if (
        not isinstance(last_reached, int | float)
        or isinstance(last_reached, bool)
        or not math.isfinite(last_reached)
    ):
        return None
    return StoredSeed(seed, address, fingerprint, name, float(last_reached))

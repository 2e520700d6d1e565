"""Fuzz target for beacon decoding and filtering.

Invariants, for any bytes from any source address at any time:

- decode_beacon raises ProtocolError and nothing else;
- BeaconFilter.check never raises and returns BeaconAccepted or BeaconRejected;
- a datagram is accepted only if the bytes it signs are bytes that one of our
  identities really signed (no mutation gets past the signature).

Inputs are random bytes, and real signed beacons mutated (bit flips, edge values
in header fields, truncation, extension, splices) or re-signed by the wrong key.
Two filters judge them: one with rate limits lifted so that every input reaches
the deep checks, and one with the real limits and a few source addresses.

tests/test_discovery.py runs a few seconds of it. The long form, by hand, from
the repository root:

    python -m tests.fuzz_beacon --seconds 600 [--seed N]
"""

from __future__ import annotations

import argparse
import random
import secrets
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from crypto_utils import Identity
from peerchat.errors import ProtocolError
from peerchat.limits import BEACON_MAX_SIZE
from peerchat.protocol.beacon import (
    HEADER_SIZE,
    BeaconAccepted,
    BeaconFilter,
    BeaconRejected,
    decode_beacon,
    encode_beacon,
)

NOW = 1_700_000_000.0
NAMES = ["Alice", "Bob", "Ünïcødé", "名前", "x" * 32, "a b", "Z"]
INTERESTING_U8 = [0, 1, 2, 0x7F, 0x80, 0xFE, 0xFF]
INTERESTING_U16 = [0, 1, 0x7FFF, 0x8000, 0xFFFF, HEADER_SIZE, BEACON_MAX_SIZE]
INTERESTING_F64 = [0.0, -1.0, NOW, NOW + 31, NOW - 31, 1e300, float("inf"), float("nan")]
# (offset, struct format) of each header field after the magic (see discovery's docstring).
HEADER_FIELDS = [(4, ">B"), (5, ">B"), (6, ">H"), (8, ">H"), (10, ">H"), (12, ">d"), (36, ">Q")]


@dataclass
class FuzzStats:
    iterations: int = 0
    accepted: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


class FuzzFailure(AssertionError):
    pass


class _Harness:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.alice = Identity.generate(2048)
        self.mallory = Identity.generate(2048)
        self.own = Identity.generate(2048)
        self.genuine: set[bytes] = set()
        self.corpus: list[bytes] = []
        self.seq = 0
        for _ in range(24):
            self.corpus.append(self.sign(self.rng.choice([self.alice, self.own])))
        self.fresh_filters()

    def fresh_filters(self) -> None:
        self.deep = BeaconFilter(
            self.own.fingerprint, rate=1e12, burst=1e12, global_rate=1e12, max_peers=8
        )
        self.strict = BeaconFilter(self.own.fingerprint, max_sources=4)

    def sign(self, identity: Identity) -> bytes:
        self.seq += 1
        data = encode_beacon(
            identity,
            self.rng.choice(NAMES),
            self.rng.randint(1, 65535),
            self.rng.choice([b"\x00" * 16, self.rng.randbytes(16)]),
            self.seq,
            NOW + self.rng.uniform(-5, 5),
        )
        self.genuine.add(decode_beacon(data)[1])
        return data

    # -- input generators

    def random_bytes(self) -> bytes:
        return self.rng.randbytes(self.rng.choice([0, 1, 4, 43, 44, 45, 100, 900, 2048, 2049]))

    def mutated(self) -> bytes:
        data = bytearray(self.rng.choice(self.corpus))
        for _ in range(self.rng.randint(1, 4)):
            self.rng.choice(self._mutators)(data)
        return bytes(data)

    def resigned(self) -> bytes:
        """A well-formed beacon claiming Alice's key, signed by Mallory."""
        data = encode_beacon(
            self.mallory, "Alice", self.rng.randint(1, 65535), b"\x01" * 16, 10**6, NOW
        )
        beacon, _, _ = decode_beacon(data)
        alice_der = self.alice.public_der
        name = beacon.name.encode()
        sig = data[HEADER_SIZE + len(name) + len(beacon.identity_der) :]
        header = bytearray(data[:HEADER_SIZE])
        struct.pack_into(">H", header, 6, len(alice_der))
        return bytes(header) + name + alice_der + sig

    # -- mutators (in place)

    def _flip(self, data: bytearray) -> None:
        if data:
            i = self.rng.randrange(len(data))
            data[i] ^= 1 << self.rng.randrange(8)

    def _byte(self, data: bytearray) -> None:
        if data:
            data[self.rng.randrange(len(data))] = self.rng.choice(INTERESTING_U8)

    def _field(self, data: bytearray) -> None:
        offset, fmt = self.rng.choice(HEADER_FIELDS)
        if len(data) < offset + struct.calcsize(fmt):
            return
        if fmt == ">B":
            value: object = self.rng.choice(INTERESTING_U8)
        elif fmt == ">H":
            value = self.rng.choice(INTERESTING_U16)
        elif fmt == ">d":
            value = self.rng.choice(INTERESTING_F64)
        else:
            value = self.rng.choice([0, 1, 2**63, 2**64 - 1, self.seq + 1])
        struct.pack_into(fmt, data, offset, value)

    def _truncate(self, data: bytearray) -> None:
        if data:
            del data[self.rng.randrange(len(data)) :]

    def _extend(self, data: bytearray) -> None:
        data.extend(self.rng.randbytes(self.rng.choice([1, 2, 16, 700])))

    def _delete(self, data: bytearray) -> None:
        if len(data) > 1:
            start = self.rng.randrange(len(data) - 1)
            del data[start : start + self.rng.randint(1, 32)]

    def _splice(self, data: bytearray) -> None:
        other = self.rng.choice(self.corpus)
        cut = self.rng.randrange(min(len(data), len(other)) + 1)
        data[cut:] = other[cut:]

    @property
    def _mutators(self) -> list[Callable[[bytearray], None]]:
        return [
            self._flip,
            self._byte,
            self._field,
            self._field,
            self._truncate,
            self._extend,
            self._delete,
            self._splice,
        ]

    # -- one step

    def step(self, stats: FuzzStats) -> None:
        roll = self.rng.random()
        if roll < 0.15:
            data = self.random_bytes()
        elif roll < 0.20:
            data = self.resigned()
        elif roll < 0.22:
            data = self.sign(self.alice)  # genuine: keeps the accept path exercised
        elif roll < 0.23:
            data = self.rng.choice(self.corpus)  # a replay
        else:
            data = self.mutated()
        now = NOW + self.rng.choice([0.0, 0.0, self.rng.uniform(-40, 40)])
        try:
            decode_beacon(data)
        except ProtocolError:
            pass
        except Exception as exc:
            raise FuzzFailure(f"decode_beacon raised {exc!r} for {data.hex()}") from exc
        self._check(self.deep, data, "10.0.0.1", now, stats)
        source = self.rng.choice(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"])
        self._check(self.strict, data, source, now + stats.iterations / 1000, stats)
        stats.iterations += 1

    def _check(
        self, beacon_filter: BeaconFilter, data: bytes, source: str, now: float, stats: FuzzStats
    ) -> None:
        try:
            result = beacon_filter.check(data, source, now)
        except Exception as exc:
            raise FuzzFailure(f"check raised {exc!r} for {data.hex()}") from exc
        if isinstance(result, BeaconAccepted):
            if decode_beacon(data)[1] not in self.genuine:
                raise FuzzFailure(f"accepted bytes nobody signed: {data.hex()}")
            stats.accepted += 1
        elif isinstance(result, BeaconRejected):
            stats.reasons[result.reason.split(":")[0]] += 1
        else:
            raise FuzzFailure(f"check returned {result!r}")


def fuzz(seconds: float, seed: int | None = None) -> FuzzStats:
    """Run for `seconds`; raises FuzzFailure (with the input in hex) on a broken invariant."""
    rng = random.Random(seed)
    harness = _Harness(rng)
    stats = FuzzStats()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(200):
            harness.step(stats)
        if stats.iterations % 20_000 == 0:
            harness.fresh_filters()
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else secrets.randbits(32)
    print(f"fuzzing beacons for {args.seconds:g} s, seed {seed}", flush=True)
    try:
        stats = fuzz(args.seconds, seed)
    except FuzzFailure as exc:
        print(f"FAILED (seed {seed}): {exc}", file=sys.stderr)
        return 1
    print(f"{stats.iterations} inputs, {stats.accepted} accepted, no invariant broken")
    for reason, count in stats.reasons.most_common():
        print(f"  {reason}: {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

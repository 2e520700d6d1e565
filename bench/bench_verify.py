"""Comparing a code, in memory: from "compare code" to both sides verified.

Two VerificationRoles talk over a real SecureChannel pair (every message is
encoded, sealed, framed, opened and decoded), with the users' answers
scripted: each says yes as soon as its screen shows the code. The figure is
the time from the requester's `start` to the moment both roles have called
`mark_verified`: four messages to agree on the code (two round trips), then
one confirmation each way. No network, so this is the cost of the work
itself; on loopback the node adds its round trips.

Baseline: the same six messages' worth of transport alone, six Pings sealed
and opened on the same channel.

    python -m bench.bench_verify [--quick]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bench.harness import summarize
from bench.registry import module_main
from crypto_utils import Identity, fingerprint_of
from peerchat.events import CodeRequested, CodeShown, UiEvent
from peerchat.net.verification import CodeResult, VerificationRole
from peerchat.protocol.channel import Credentials, Event, MessageReceived, Role, SecureChannel
from peerchat.protocol.messages import VERIFY_MESSAGE_TYPES, Message, Ping

Row = dict[str, object]
KEY_BITS = 2048  # the keys only matter to the handshake, which is not timed here
MESSAGES_PER_COMPARISON = 6


def _identity() -> Identity:
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    der = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return Identity(key, der, fingerprint_of(der))


class _Pair:
    """Alice and Bob: one session, one role each, answers scripted."""

    def __init__(self, alice_id: Identity, bob_id: Identity) -> None:
        self.a = SecureChannel(Role.INITIATOR, Credentials.create(alice_id, "Alice", 5000))
        self.b = SecureChannel(Role.RESPONDER, Credentials.create(bob_id, "Bob", 5001))
        self.b.receive_data(self.a.data_to_send())
        self.a.receive_data(self.b.data_to_send())
        self.b.receive_data(self.a.data_to_send())
        self.alice_fp, self.bob_fp = alice_id.fingerprint, bob_id.fingerprint
        self.verified: list[str] = []
        self.now = 0.0
        self.alice = self._role(self.alice_fp, self.a, self._alice_news)
        self.bob = self._role(self.bob_fp, self.b, self._bob_news)
        h = self.a.handshake_hash
        assert h is not None
        self.alice.session_opened(self.bob_fp, "Bob", h, 0.0)
        self.bob.session_opened(self.alice_fp, "Alice", h, 0.0)

    def _role(
        self, fp: str, channel: SecureChannel, emit: Callable[[UiEvent], None]
    ) -> VerificationRole:
        return VerificationRole(
            fp,
            send=lambda _peer, message: channel.send_message(message),
            mark_verified=self.verified.append,
            emit=emit,
        )

    def _alice_news(self, event: UiEvent) -> None:
        pass  # "Bob is now verified" would be printed here

    def _bob_news(self, event: UiEvent) -> None:
        if isinstance(event, CodeRequested):  # Bob opens option 6 and says yes at once
            [offer] = self.bob.waiting()
            self.bob.answer(self.alice_fp, offer.attempt, True, self.now)

    def _alice_code(self, result: CodeResult) -> None:
        assert isinstance(result, CodeShown)
        self.alice.answer(self.bob_fp, result.attempt, True, self.now)

    def pump(self) -> None:
        while True:
            to_b, to_a = self.a.data_to_send(), self.b.data_to_send()
            if not to_a and not to_b:
                return
            self._deliver(self.b.receive_data(to_b), self.bob, self.alice_fp)
            self._deliver(self.a.receive_data(to_a), self.alice, self.bob_fp)

    def _deliver(self, events: list[Event], role: VerificationRole, sender: str) -> None:
        for event in events:
            assert isinstance(event, MessageReceived)
            message = event.message
            assert isinstance(message, VERIFY_MESSAGE_TYPES)
            role.receive(sender, message, self.now)

    def compare_once(self) -> float:
        self.verified.clear()
        self.now += 1.0
        started = time.perf_counter()
        self.alice.start(self.bob_fp, self.now, self._alice_code)
        self.pump()
        elapsed = time.perf_counter() - started
        if sorted(self.verified) != sorted((self.alice_fp, self.bob_fp)):
            raise RuntimeError(f"comparison did not verify both sides: {self.verified}")
        return elapsed

    def transport_once(self) -> float:
        pings: list[Message] = [Ping(i) for i in range(MESSAGES_PER_COMPARISON // 2)]
        started = time.perf_counter()
        for message in pings:  # one at a time each way, as the exchange goes
            self.a.send_message(message)
            self.b.receive_data(self.a.data_to_send())
            self.b.send_message(message)
            self.a.receive_data(self.b.data_to_send())
        return time.perf_counter() - started


def measure(runs: int, comparisons: int) -> tuple[list[float], list[float], list[float]]:
    """Per-run medians of a comparison and of its transport, and every comparison."""
    pair = _Pair(_identity(), _identity())
    medians: list[float] = []
    floors: list[float] = []
    every: list[float] = []
    for _ in range(runs):
        samples = [pair.compare_once() for _ in range(comparisons)]
        every += samples
        medians.append(statistics.median(samples))
        floors.append(statistics.median(pair.transport_once() for _ in range(comparisons)))
    return medians, floors, every


def run(quick: bool, *, sizes: tuple[int, int] | None = None) -> list[Row]:
    """`sizes`: (runs, comparisons per run), for a smoke test; else by `quick`."""
    runs, comparisons = sizes or ((3, 30) if quick else (15, 300))
    medians, floors, every = measure(runs, comparisons)
    value = statistics.median(medians) * 1e3
    baseline = statistics.median(floors) * 1e3
    spread = summarize([m * 1e3 for m in medians]).spread()
    p99 = summarize(every).p99 * 1e3
    return [
        {
            "figure": "compare code to both verified, median (in memory, answers scripted) "
            "vs its 6 messages' transport",
            "value": round(value, 4),
            "unit": "ms",
            "baseline": round(baseline, 4),
            "baseline_unit": "ms",
            "ratio": round(value / baseline, 2),
            "spread": spread,
        },
        {
            "figure": "compare code to both verified, p99 (in memory, answers scripted)",
            "value": round(p99, 4),
            "unit": "ms",
            "spread": f"n={len(every)}",
        },
    ]


if __name__ == "__main__":
    sys.exit(module_main(run, "Comparing a code, in memory", entry="verify"))

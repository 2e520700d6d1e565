"""Peer exchange overhead at 50 connected peers: bytes and CPU per peer per minute.

The pure layer (`peerchat.protocol.pex`) of 50 peers, each in a session with
every other, with real RSA-3072 identities, real beacon signatures and
verifications, and every message encoded and decoded as on the wire. Time is
simulated (one `outgoing` pass per peer per second), so the figures are the
protocol's own cost, without sockets. Bytes count the frame on the wire: the
message, the 16-byte AEAD tag and the 4-byte length prefix.

Two minutes are measured: the first (every session new: each peer tells each
other about all 48 others, within the per-peer budget) and the second (steady:
own beacons every 30 s). CPU is the process time of all 50 peers' calls, per
peer.

    python -m bench.bench_pex [--quick]
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from bench.harness import Row, figure_row
from bench.registry import module_main
from crypto_utils import Identity
from peerchat.protocol.messages import PeerExchange, decode_message, encode_message
from peerchat.protocol.pex import OwnBeacon, PeerExchangeState

FULL_PEERS, QUICK_PEERS = 50, 8
FRAME_OVERHEAD = 16 + 4  # AEAD tag and length prefix
START = 1_700_000_000.0


def _mesh(count: int) -> tuple[list[str], list[PeerExchangeState]]:
    identities = [Identity.generate(3072) for _ in range(count)]
    fps = [i.fingerprint for i in identities]
    states = []
    for n, identity in enumerate(identities):
        own = OwnBeacon(identity, f"P{n}", 5000, n.to_bytes(16, "big"))
        state = PeerExchangeState(identity.fingerprint, own.sign)
        for m, fp in enumerate(fps):
            if m != n:
                state.session_up(fp, f"10.0.{m // 250}.{m % 250 + 1}", 5000)
        states.append(state)
    return fps, states


def _minute(
    fps: Sequence[str], states: Sequence[PeerExchangeState], start: float
) -> tuple[int, float, int]:
    """(bytes sent by all, CPU seconds of all, hostile drops) over 60 simulated seconds."""
    index = {fp: n for n, fp in enumerate(fps)}
    sent = 0
    cpu = 0.0
    for second in range(60):
        now = start + second
        for n, state in enumerate(states):
            began = time.process_time()
            out = state.outgoing(now)
            wire = [(target, encode_message(message)) for target, message in out]
            cpu += time.process_time() - began
            for target, data in wire:
                sent += len(data) + FRAME_OVERHEAD
                receiver = states[index[target]]
                began = time.process_time()
                message = decode_message(data)
                assert isinstance(message, PeerExchange)
                receiver.receive(fps[n], f"10.0.{n // 250}.{n % 250 + 1}", message, now)
                cpu += time.process_time() - began
    return sent, cpu, sum(s.hostile for s in states)


def run(quick: bool, *, peers: int | None = None) -> list[Row]:
    """`peers`: how many, for a smoke test; else by `quick`."""
    count = peers or (QUICK_PEERS if quick else FULL_PEERS)
    fps, states = _mesh(count)
    rows: list[Row] = []
    for label, start in (("first minute", START), ("steady minute", START + 60)):
        sent, cpu, hostile = _minute(fps, states, start)
        if hostile:
            raise AssertionError(f"{hostile} honest records were counted hostile")
        rows.append(
            figure_row(
                f"peer exchange, {count} peers, {label}: KiB sent per peer",
                sent / count / 1024,
                "KiB",
            )
        )
        rows.append(
            figure_row(
                f"peer exchange, {count} peers, {label}: CPU per peer", cpu / count * 1000, "ms"
            )
        )
    return rows


if __name__ == "__main__":
    raise SystemExit(module_main(run, __doc__ or "", entry="pex"))

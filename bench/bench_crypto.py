"""Cost of the secure channel in memory, next to raw primitives measured in the same run.

- Handshakes per second: two SecureChannel instances wired together in memory
  run the full Noise XX handshake, check each other's RSA-PSS identity
  signature, and carry the first 100-byte chat message. Baseline: the
  public-key work alone that any implementation of this handshake must do
  (2 X25519 key generations, 6 X25519 exchanges, 2 RSA-PSS verifications),
  called directly; the ratio shows what everything else costs.
- Seal / open of one frame carrying a 100-byte chat message (encode, AES-GCM,
  length prefix, and the reverse with a MessageReceived event). Baseline: one
  AESGCM.encrypt / decrypt call on a plaintext of the same size.

Each figure is the median over repeated runs (each run averages many
operations), with its spread. Identities are RSA-3072, as peer_chat creates.

    python -m bench.bench_crypto [--quick]
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bench.harness import summarize
from bench.registry import module_main
from crypto_utils import Identity, fingerprint_of, verify_signature
from peerchat.protocol.channel import STATIC_KEY_CONTEXT, Credentials, Role, SecureChannel
from peerchat.protocol.messages import Chat, encode_message, new_msg_id
from peerchat.protocol.noise import public_bytes

Row = dict[str, object]
KEY_BITS = 3072
TEXT_BYTES = 100


def _identity() -> Identity:
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    der = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return Identity(key, der, fingerprint_of(der))


def _row(
    figure: str,
    samples: list[float],
    unit: str,
    baseline_samples: list[float],
    scale: float = 1.0,
) -> Row:
    value = statistics.median(samples) * scale
    baseline = statistics.median(baseline_samples) * scale
    return {
        "figure": figure,
        "value": round(value, 4),
        "unit": unit,
        "baseline": round(baseline, 4),
        "baseline_unit": unit,
        "ratio": round(value / baseline, 2),
        "spread": summarize([s * scale for s in samples]).spread(),
    }


def _handshake_once(alice: Credentials, bob: Credentials, first: Chat) -> None:
    a = SecureChannel(Role.INITIATOR, alice)
    b = SecureChannel(Role.RESPONDER, bob)
    b.receive_data(a.data_to_send())
    a.receive_data(b.data_to_send())
    a.send_message(first)
    events = b.receive_data(a.data_to_send())  # message 3 and the first frame together
    if len(events) != 2:
        raise RuntimeError("handshake did not complete")


def _floor_once(verify: Callable[[], bool], peer_public: X25519PublicKey) -> None:
    for _ in range(2):  # each side: one ephemeral key and three exchanges
        ephemeral = X25519PrivateKey.generate()
        for _ in range(3):
            ephemeral.exchange(peer_public)
        if not verify():
            raise RuntimeError("signature check failed")


def _timed(count: int, step: Callable[[], None]) -> float:
    """Seconds per call of `step`, averaged over `count` calls."""
    started = time.perf_counter()
    for _ in range(count):
        step()
    return (time.perf_counter() - started) / count


def measure_handshakes(runs: int, per_run: int) -> tuple[list[float], list[float]]:
    """Seconds per handshake (channel, primitive floor), one sample per run, interleaved."""
    alice_id, bob_id = _identity(), _identity()
    alice = Credentials.create(alice_id, "Alice", 5000)
    bob = Credentials.create(bob_id, "Bob", 5001)
    first = Chat(new_msg_id(time.time()), time.time(), "x" * TEXT_BYTES)
    signed = STATIC_KEY_CONTEXT + public_bytes(alice.static_private)

    def verify() -> bool:
        return verify_signature(alice.identity_der, alice.static_signature, signed)

    peer_public = X25519PrivateKey.generate().public_key()
    channel, floor = [], []
    _handshake_once(alice, bob, first)  # warm up
    for _ in range(runs):
        channel.append(_timed(per_run, lambda: _handshake_once(alice, bob, first)))
        floor.append(_timed(per_run, lambda: _floor_once(verify, peer_public)))
    return channel, floor


def measure_frames(runs: int, per_run: int) -> dict[str, list[float]]:
    """Seconds per frame for seal, open, AESGCM encrypt and decrypt; one sample per run."""
    alice = Credentials.create(_identity(), "Alice", 5000)
    bob = Credentials.create(_identity(), "Bob", 5001)
    message = Chat(new_msg_id(time.time()), time.time(), "x" * TEXT_BYTES)
    plaintext = encode_message(message)  # the raw calls get exactly what the channel seals
    samples: dict[str, list[float]] = {"seal": [], "open": [], "encrypt": [], "decrypt": []}
    for _ in range(runs):
        a = SecureChannel(Role.INITIATOR, alice)
        b = SecureChannel(Role.RESPONDER, bob)
        b.receive_data(a.data_to_send())
        a.receive_data(b.data_to_send())
        b.receive_data(a.data_to_send())
        frames: list[bytes] = []
        send, drain, keep = a.send_message, a.data_to_send, frames.append
        started = time.perf_counter()
        for _ in range(per_run):
            send(message)
            keep(drain())
        samples["seal"].append((time.perf_counter() - started) / per_run)
        receive = b.receive_data
        started = time.perf_counter()
        for frame in frames:
            receive(frame)
        samples["open"].append((time.perf_counter() - started) / per_run)

        aead = AESGCM(os.urandom(32))
        nonce = bytes(12)
        sealed: list[bytes] = []
        encrypt, decrypt, keep = aead.encrypt, aead.decrypt, sealed.append
        started = time.perf_counter()
        for _ in range(per_run):
            keep(encrypt(nonce, plaintext, None))
        samples["encrypt"].append((time.perf_counter() - started) / per_run)
        started = time.perf_counter()
        for ciphertext in sealed:
            decrypt(nonce, ciphertext, None)
        samples["decrypt"].append((time.perf_counter() - started) / per_run)
    return samples


def run(quick: bool) -> list[Row]:
    runs, handshakes, frames = (5, 40, 500) if quick else (15, 300, 5000)
    channel, floor = measure_handshakes(runs, handshakes)
    rows = [
        _row(
            f"handshakes per second (in memory, XX + RSA-{KEY_BITS} identity check"
            " + first frame) vs public-key work alone",
            [1.0 / s for s in channel],
            "/s",
            [1.0 / s for s in floor],
        ),
        _row(
            "handshake + first frame, median (in memory) vs public-key work alone",
            channel,
            "ms",
            floor,
            scale=1e3,
        ),
    ]
    samples = measure_frames(runs, frames)
    rows.append(
        _row(
            f"seal a {TEXT_BYTES}-byte chat message, per frame, median vs AESGCM.encrypt",
            samples["seal"],
            "us",
            samples["encrypt"],
            scale=1e6,
        )
    )
    rows.append(
        _row(
            f"open a {TEXT_BYTES}-byte chat message, per frame, median vs AESGCM.decrypt",
            samples["open"],
            "us",
            samples["decrypt"],
            scale=1e6,
        )
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    return module_main(run, __doc__.splitlines()[0] if __doc__ else "crypto costs", argv)


if __name__ == "__main__":
    sys.exit(main())

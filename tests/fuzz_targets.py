"""Fuzz targets for the protocol layer.

Each target takes bytes and may raise `ProtocolError` and nothing else; any
other exception (including a failed invariant, raised as `AssertionError`) is a
bug. tests/test_fuzz_protocol.py runs every target briefly inside the suite;
run them for longer by hand with

    python -m tests.fuzz_targets --seconds 600 [--target NAME] [--seed N]

The runner mutates a small corpus of valid inputs per target (bit flips,
byte changes, insertions, deletions, truncation, splicing) and also tries
plain random bytes. A failing input is printed in hex so it can be replayed
with `--replay HEX`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import random
import struct
import sys
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from crypto_utils import Identity, fingerprint_of
from peerchat.errors import ProtocolError
from peerchat.protocol.channel import (
    PROLOGUE,
    PROTOCOL_NAME,
    ChannelState,
    Credentials,
    MessageReceived,
    Role,
    SecureChannel,
    encode_hello_payload,
    parse_hello_payload,
)
from peerchat.protocol.framing import FrameDecoder, encode_frame
from peerchat.protocol.messages import (
    Ack,
    Bye,
    Chat,
    Message,
    Ping,
    Pong,
    decode_message,
    encode_message,
)
from peerchat.protocol.noise import HandshakeState
from peerchat.protocol.transfer import (
    EMPTY_DIGEST,
    AbortCode,
    FileAbort,
    FileAccept,
    FileAck,
    FileChunk,
    FileComplete,
    FileDecline,
    FileOffer,
    FileRestart,
)

Target = Callable[[bytes], None]


def _check(condition: bool, what: str) -> None:
    if not condition:  # explicit, so the invariants hold under python -O as well
        raise AssertionError(what)


@functools.cache
def _identity(label: str) -> Identity:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return Identity(key, der, fingerprint_of(der))


@functools.cache
def _credentials(label: str) -> Credentials:
    return Credentials.create(_identity(label), label, 5000)


def _established() -> tuple[SecureChannel, SecureChannel]:
    a = SecureChannel(Role.INITIATOR, _credentials("Alice"))
    b = SecureChannel(Role.RESPONDER, _credentials("Bob"))
    b.receive_data(a.data_to_send())
    a.receive_data(b.data_to_send())
    b.receive_data(a.data_to_send())
    return a, b


# -- targets ---------------------------------------------------------------------


def fuzz_frame_decoder(data: bytes) -> None:
    """Arbitrary bytes in arbitrary chunks (the first byte picks the chunk size)."""
    if not data:
        return
    step = data[0] % 17 + 1
    limit = 1 + data[0] * 4
    decoder = FrameDecoder(max_frame_size=limit)
    for i in range(1, len(data), step):
        for frame in decoder.feed(data[i : i + step]):
            _check(0 < len(frame) <= limit, "frame outside the size limit")
        _check(decoder.buffered <= limit + 4 + step, "decoder buffered past its limit")
    decoder.close()


def fuzz_message_decoder(data: bytes) -> None:
    """A decoded message re-encodes to exactly the same bytes."""
    message = decode_message(data)
    _check(encode_message(message) == data, "message decoding is not canonical")


def fuzz_hello_payload(data: bytes) -> None:
    """Arbitrary handshake payloads, properly encrypted by a peer with a real identity."""
    victim = SecureChannel(Role.INITIATOR, _credentials("Alice"))
    rogue = HandshakeState(
        PROTOCOL_NAME, initiator=False, prologue=PROLOGUE, s=_credentials("Mallory").static_private
    )
    rogue.read_message(victim.data_to_send()[4:])
    data = data[:60_000]  # one Noise message
    try:
        parse_hello_payload(data)
        parsed = True
    except ProtocolError:
        parsed = False
    try:
        events = victim.receive_data(encode_frame(rogue.write_message(data)))
    except ProtocolError:
        _check(victim.state is ChannelState.CLOSED, "a failed channel is not closed")
        raise
    _check(parsed, "the channel accepted a payload the parser refuses")
    _check(victim.state is ChannelState.ESTABLISHED and len(events) == 1, "no handshake event")
    peer = victim.peer
    _check(peer is not None and peer.identity_der == _identity("Mallory").public_der, "peer")


def fuzz_handshake_responder(data: bytes) -> None:
    """Arbitrary bytes at a fresh responder, then end of stream."""
    channel = SecureChannel(Role.RESPONDER, _credentials("Bob"))
    try:
        channel.receive_data(data)
        channel.receive_eof()
    finally:
        _check(channel.state is not ChannelState.ESTABLISHED, "random bytes authenticated")


def fuzz_handshake_initiator(data: bytes) -> None:
    """Arbitrary bytes as the reply to a fresh initiator's first message."""
    channel = SecureChannel(Role.INITIATOR, _credentials("Alice"))
    channel.data_to_send()
    try:
        channel.receive_data(data)
        channel.receive_eof()
    finally:
        _check(channel.state is not ChannelState.ESTABLISHED, "random bytes authenticated")


def fuzz_handshake_mutation(data: bytes) -> None:
    """An honest handshake with byte changes (4 bytes each: message, position, xor)."""
    a = SecureChannel(Role.INITIATOR, _credentials("Alice"))
    b = SecureChannel(Role.RESPONDER, _credentials("Bob"))
    changes = [struct.unpack_from(">BHB", data, i) for i in range(0, len(data) - 3, 4)]
    changed = False
    for index in range(3):
        sender, receiver = (a, b) if index % 2 == 0 else (b, a)
        honest = sender.data_to_send()
        wire = bytearray(honest)
        for message, position, xor in changes:
            if message % 3 == index and wire:
                wire[position % len(wire)] ^= xor
        changed |= wire != honest
        receiver.receive_data(bytes(wire))
    a.receive_eof()
    b.receive_eof()
    _check(not changed, "a modified handshake was accepted")


def fuzz_established_channel(data: bytes) -> None:
    """Operations on an established pair: honest, tampered, replayed, reflected, raw."""
    a, b = _established()
    last = b""
    i = 0
    while i < len(data):
        op, arg = data[i] % 6, data[i + 1] if i + 1 < len(data) else 0
        i += 2
        if op == 0:  # an honest message arrives intact
            message = Chat("ab" * 16, float(arg), "m" * arg)
            a.send_message(message)
            last = a.data_to_send()
            _check(b.receive_data(last) == [MessageReceived(message)], "message lost or changed")
        elif op == 1:  # frames before the tampered one arrive; it and later ones never do
            sent: list[Message] = [Ack(("cd" * 16,)), Ping(arg), Pong(arg), Bye("b" * (arg % 200))]
            a.send_messages(sent)
            wire = bytearray(a.data_to_send())
            wire[(arg * 7919) % len(wire)] ^= (data[i] if i < len(data) else 0) or 1
            events = b.receive_data(bytes(wire))
            honest = [MessageReceived(m) for m in sent[: len(events)]]
            _check(len(events) < len(sent) and events == honest, "a tampered frame was accepted")
            b.receive_eof()  # only a longer length prefix gets here: the stream is cut
            raise AssertionError("a tampered stream ended cleanly")
        elif op == 2 and last:  # a replayed frame is refused
            b.receive_data(last)
            raise AssertionError("a replayed frame was accepted")
        elif op == 3:  # raw bytes from the data itself, then the end of the stream
            b.receive_data(data[i : i + arg])
            b.receive_eof()
            return
        elif op == 4:  # a frame reflected to its sender is refused
            b.send_message(Ping(arg))
            b.receive_data(b.data_to_send())
            raise AssertionError("a reflected frame was accepted")
        elif op == 5:
            b.receive_eof()
            _check(b.state is ChannelState.CLOSED, "a clean end of stream left the channel open")
            return


TARGETS: dict[str, Target] = {
    "frame_decoder": fuzz_frame_decoder,
    "message_decoder": fuzz_message_decoder,
    "hello_payload": fuzz_hello_payload,
    "handshake_responder": fuzz_handshake_responder,
    "handshake_initiator": fuzz_handshake_initiator,
    "handshake_mutation": fuzz_handshake_mutation,
    "established_channel": fuzz_established_channel,
}


# -- corpus and runner -----------------------------------------------------------


def _honest_handshake() -> list[bytes]:
    a = SecureChannel(Role.INITIATOR, _credentials("Alice"))
    b = SecureChannel(Role.RESPONDER, _credentials("Bob"))
    wire = [a.data_to_send()]
    b.receive_data(wire[0])
    wire.append(b.data_to_send())
    a.receive_data(wire[1])
    wire.append(a.data_to_send())
    return wire


def seeds(name: str) -> list[bytes]:
    """Valid (or nearly valid) inputs for one target, for the mutator to start from."""
    if name == "frame_decoder":
        return [b"\x03" + encode_frame(b"hello") + encode_frame(b"x" * 40), b"\xff" + bytes(8)]
    if name == "message_decoder":
        return [
            encode_message(m)
            for m in (
                Chat("ab" * 16, 1.5, "hi ü"),
                Ack(("cd" * 16, "ef" * 16)),
                Ping(1),
                Pong(2),
                Bye("done"),
                FileOffer("12" * 16, 2_400_000, EMPTY_DIGEST, "report é.pdf"),
                FileAccept("12" * 16, 4096, EMPTY_DIGEST),
                FileDecline("12" * 16, "declined"),
                FileChunk("12" * 16, 126976, b"\x00data\xff"),
                FileAck("12" * 16, 253952),
                FileComplete("12" * 16),
                FileAbort("12" * 16, AbortCode.STALLED, "quiet"),
                FileRestart("12" * 16),
            )
        ]
    if name == "hello_payload":
        mallory = _credentials("Mallory")
        return [
            encode_hello_payload(
                name="Mallory",
                listen_port=6000,
                identity_der=mallory.identity_der,
                signature=mallory.static_signature,
            )
        ]
    if name == "handshake_responder":
        wire = _honest_handshake()
        return [wire[0], wire[0] + wire[2]]
    if name == "handshake_initiator":
        return [_honest_handshake()[1]]
    if name == "handshake_mutation":
        return [bytes(4), b"\x01\x00\x50\x01", b"\x02\x02\x00\x80\x00\x00\x00\x00"]
    return [bytes([0, 5, 3, 4]) + b"\x00\x00\x01\x07", bytes([0, 1, 2, 0]), bytes([0, 9, 4, 1])]


def mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(7)
        if choice == 0 and out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        elif choice == 1 and out:
            out[rng.randrange(len(out))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif choice == 2:
            pos = rng.randrange(len(out) + 1)
            out[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif choice == 3 and out:
            pos = rng.randrange(len(out))
            del out[pos : pos + rng.randint(1, 8)]
        elif choice == 4 and out:
            del out[rng.randrange(len(out)) :]
        elif choice == 5:
            other = rng.choice(corpus)
            pos = rng.randrange(len(out) + 1)
            out[pos:] = other[rng.randrange(len(other) + 1) :]
        else:
            out = bytearray(rng.randbytes(rng.randint(0, 64)))
    return bytes(out)


def run_one(target: Target, data: bytes) -> None:
    """Run `target` on `data`; a ProtocolError is an allowed outcome."""
    with contextlib.suppress(ProtocolError):
        target(data)


def run(name: str, seconds: float, seed: int = 0) -> int:
    """Fuzz one target for `seconds`; return how many inputs ran. Raises on a bug."""
    target = TARGETS[name]
    corpus = seeds(name)
    rng = random.Random(seed)
    count = 0
    deadline = time.perf_counter() + seconds
    for data in corpus:
        _run_reporting(name, target, data)
        count += 1
    while time.perf_counter() < deadline:
        data = mutate(rng, rng.choice(corpus), corpus)
        _run_reporting(name, target, data)
        count += 1
    return count


def _run_reporting(name: str, target: Target, data: bytes) -> None:
    try:
        run_one(target, data)
    except Exception as exc:
        raise AssertionError(f"fuzz target {name} failed on input {data.hex()}: {exc!r}") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fuzz the peer_chat protocol layer.")
    parser.add_argument("--seconds", type=float, default=60.0, help="time per target")
    parser.add_argument("--target", choices=sorted(TARGETS), action="append")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--replay", metavar="HEX", help="run the target(s) on one input")
    args = parser.parse_args(argv)
    names = args.target or list(TARGETS)
    if args.replay is not None:
        for name in names:
            run_one(TARGETS[name], bytes.fromhex(args.replay))
        print("no failure")
        return 0
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"seed {seed}, {args.seconds:g} s per target")
    for name in names:
        started = time.perf_counter()
        count = run(name, args.seconds, seed)
        rate = count / (time.perf_counter() - started)
        print(f"{name:22} {count:10d} inputs  {rate:9.0f}/s  ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The fuzz targets: each takes one input and returns how deep it got, or raises on a bug.

A target may see `ProtocolError` from the code under test, which is the
allowed outcome of bad input, and handles it itself; any exception it lets
out (an `AssertionError` for a broken invariant included) is a bug, and
libFuzzer stops and saves the input.

Each `run` returns the name of the stage the input reached, so a run can say
how many inputs went past the cheap checks (`DEEP`) rather than count every
rejection at the first length prefix as work. Most targets read their input
with `Reader` (counts, lengths and modes first, then bytes): the fuzzer picks
those, and the harness builds well-framed, validly encrypted or validly
signed input around the bytes it picks, so most inputs reach the code past
the framing, the authentication or the signature.

Keys and signatures made here are fresh in every process; the seeds that
depend on them (`runtime_seeds`) are made at start, the others are stored in
tests/fuzz/corpus/<target>/.
"""

from __future__ import annotations

import contextlib
import functools
import math
import struct
import tempfile
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from crypto_utils import Identity, Sealer, verify_signature
from peerchat import delivery
from peerchat.delivery import Delivery, outgoing_message
from peerchat.errors import ProtocolError
from peerchat.events import MessageArrived
from peerchat.limits import FRAME_HEADER_SIZE, MAX_HANDSHAKE_PAYLOAD, PROTOCOL_VERSION
from peerchat.protocol.beacon import (
    BeaconAccepted,
    BeaconFilter,
    decode_beacon,
    encode_beacon,
)
from peerchat.protocol.channel import (
    PROLOGUE,
    PROTOCOL_NAME,
    STATIC_KEY_CONTEXT,
    ChannelState,
    Credentials,
    HandshakeComplete,
    MessageReceived,
    Role,
    SecureChannel,
    encode_hello_payload,
    parse_hello_payload,
)
from peerchat.protocol.framing import FrameDecoder, encode_frame
from peerchat.protocol.messages import (
    MAX_ACK_IDS,
    Ack,
    Bye,
    Chat,
    Message,
    Ping,
    Pong,
    decode_message,
    encode_message,
)
from peerchat.protocol.noise import HandshakeState, public_bytes
from peerchat.text import validate_name
from peerchat.ui.menu import describe_event, format_history_row
from storage import DeliveryState, HistoryStore

NOW: Final = 1_700_000_000.0
_PACK_LENGTH = struct.Struct(">I").pack
# What display_safe lets through of the categories it escapes: the two joiners.
_UNSAFE: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_JOINERS: Final = frozenset({"\u200c", "\u200d"})


def check(condition: bool, what: str) -> None:
    if not condition:  # explicit, so the invariants hold under python -O as well
        raise AssertionError(what)


def check_one_safe_line(text: str, what: str) -> None:
    """What the menu prints: one line, no character the terminal would obey."""
    for char in text:
        unsafe = unicodedata.category(char) in _UNSAFE and char not in _JOINERS
        check(not unsafe, f"{what} prints {char!r}: {text!r}")


@functools.cache
def identity(label: str) -> Identity:
    return Identity.generate(2048)


@functools.cache
def credentials(label: str) -> Credentials:
    return Credentials.create(identity(label), label, 5000)


@functools.cache
def rogue_static() -> tuple[X25519PrivateKey, bytes]:
    """Mallory's Noise static key and her identity's signature over it (one per process)."""
    static = X25519PrivateKey.generate()
    return static, identity("Mallory").sign(STATIC_KEY_CONTEXT + public_bytes(static))


def mallory_hello(name: str = "Mallory", port: int = 6000) -> bytes:
    _, signature = rogue_static()
    return encode_hello_payload(
        name=name,
        listen_port=port,
        identity_der=identity("Mallory").public_der,
        signature=signature,
    )


class Reader:
    """Reads an input from the front: numbers first, then bytes; zeros once it runs out."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, size: int) -> bytes:
        chunk = self._data[self._pos : self._pos + size]
        self._pos += len(chunk)
        return chunk

    def u8(self) -> int:
        chunk = self.take(1)
        return chunk[0] if chunk else 0

    def u16(self) -> int:
        return int.from_bytes(self.take(2).ljust(2, b"\0"), "big")

    def pick(self, low: int, high: int) -> int:
        """A number in low..high (one byte for a span under 256, else two)."""
        span = high - low + 1
        return low + (self.u8() if span <= 256 else self.u16()) % span

    def flag(self) -> bool:
        return bool(self.u8() & 1)

    def rest(self) -> bytes:
        return self.take(self.remaining)


class Writer:
    """Lays out an input as Reader reads it back, to write seeds."""

    def __init__(self) -> None:
        self.data = bytearray()

    def u8(self, value: int) -> Writer:
        self.data.append(value)
        return self

    def u16(self, value: int) -> Writer:
        self.data += value.to_bytes(2, "big")
        return self

    def pick(self, low: int, high: int, value: int) -> Writer:
        return self.u8(value - low) if high - low < 256 else self.u16(value - low)

    def flag(self, value: bool) -> Writer:
        return self.u8(int(value))

    def put(self, data: bytes) -> Writer:
        self.data += data
        return self

    def sized(self, data: bytes) -> Writer:
        """`data` after its length as a u16."""
        return self.u16(len(data)).put(data)

    def done(self) -> bytes:
        return bytes(self.data)


class Target:
    """One fuzz target: `run(data)` returns the stage reached; a stage in DEEP is deep."""

    DEEP: frozenset[str] = frozenset()

    def runtime_seeds(self) -> list[bytes]:
        """Seeds that depend on this process's keys (the stored ones cannot)."""
        return []

    def run(self, data: bytes) -> str:
        raise NotImplementedError


# -- frames ------------------------------------------------------------------------------


def reference_frames(stream: bytes, limit: int) -> tuple[list[bytes], bool]:
    """(frames, refused): the frames a stream holds, read the simplest way, and whether a
    length prefix outside 1..limit or a cut frame makes it invalid."""
    frames: list[bytes] = []
    pos = 0
    while len(stream) - pos >= FRAME_HEADER_SIZE:
        (size,) = struct.unpack_from(">I", stream, pos)
        if not 0 < size <= limit:
            return frames, True
        if pos + FRAME_HEADER_SIZE + size > len(stream):
            return frames, True  # cut at the end of the stream
        frames.append(stream[pos + FRAME_HEADER_SIZE : pos + FRAME_HEADER_SIZE + size])
        pos += FRAME_HEADER_SIZE + size
    return frames, pos != len(stream)


class FrameDecoderTarget(Target):
    """A stream of length-prefixed frames (lengths the fuzzer picks, 0 and one over the
    limit included, then raw bytes) fed in chunks of any size; compared with
    `reference_frames`."""

    DEEP = frozenset({"every frame", "frames, then refused"})

    def run(self, data: bytes) -> str:
        reader = Reader(data)
        limit = reader.pick(1, 600)
        one_at_a_time = reader.flag()  # as a channel reads while it authenticates
        chunk_sizes = [reader.pick(1, 80) for _ in range(reader.pick(1, 8))]
        stream = bytearray()
        for _ in range(reader.pick(0, 6)):
            size = reader.u16() % (limit + 2)  # 0 and limit + 1 are refused
            stream += _PACK_LENGTH(size) + reader.take(size)
        stream += reader.rest()
        expected, refused = reference_frames(bytes(stream), limit)

        decoder = FrameDecoder(max_frame_size=limit)
        got: list[bytes] = []
        failed = False
        pos = 0
        try:
            for index in range(len(stream)):
                if pos >= len(stream):
                    break
                size = chunk_sizes[index % len(chunk_sizes)]
                chunk = bytes(stream[pos : pos + size])
                pos += size
                if one_at_a_time:
                    frames = decoder.feed(chunk, 1)
                    while frames:
                        got += frames
                        frames = decoder.feed(b"", 1)
                else:
                    got += decoder.feed(chunk)
                check(decoder.buffered < FRAME_HEADER_SIZE + limit, "buffered past the limit")
            decoder.close()
        except ProtocolError:
            failed = True
        check(got == expected[: len(got)], "a frame the stream does not hold")
        check(failed == refused, f"refused {failed}, expected {refused}")
        if not refused:
            check(got == expected, "a frame went missing")
        if not got:
            return "no complete frame"
        return "frames, then refused" if refused else "every frame"


# -- messages ----------------------------------------------------------------------------


class MessageDecoderTarget(Target):
    """Any bytes as one decrypted message: only ProtocolError, and a message that decodes
    re-encodes to the same bytes, within every limit."""

    DEEP = frozenset({"decoded Chat", "decoded Ack", "decoded Ping", "decoded Pong", "decoded Bye"})

    def run(self, data: bytes) -> str:
        try:
            message = decode_message(data)
        except ProtocolError:
            kind = _KINDS.get(data[0], "unknown kind") if data else "empty"
            return f"refused {kind}"
        check(encode_message(message) == data, "decoding is not canonical")
        check_message(message)
        return f"decoded {type(message).__name__}"


_KINDS: Final = {1: "Chat", 2: "Ack", 3: "Ping", 4: "Pong", 5: "Bye"}


def check_message(message: Message) -> None:
    if isinstance(message, Chat):
        check(len(message.msg_id) == 32 and message.msg_id == message.msg_id.lower(), "msg_id")
        check(math.isfinite(message.sent_at) and message.sent_at >= 0, "sent_at")
    elif isinstance(message, Ack):
        check(0 < len(message.msg_ids) <= MAX_ACK_IDS, "ack size")


# -- the handshake payload -----------------------------------------------------------------


_NAMES: Final = [n.encode() for n in ("Mallory", "Zoë_李-2.0", "x" * 32, "a b", "Ünïcødé")]


class HelloPayloadTarget(Target):
    """A handshake payload inside message 2, properly encrypted by a responder that really
    holds its Noise static key: either the fuzzer's bytes as they are, or a payload laid
    out field by field from its choices (Mallory's real key and signature, or bytes)."""

    DEEP = frozenset({"signature refused", "authenticated"})

    def runtime_seeds(self) -> list[bytes]:
        return [hello_input("Mallory", 6000), hello_input("Ünïcødé name", 65535)]

    def run(self, data: bytes) -> str:
        return self._judge(self.payload(data))

    @staticmethod
    def payload(data: bytes) -> bytes:
        reader = Reader(data)
        if not reader.flag():
            return reader.rest()
        _, signature = rogue_static()
        version = PROTOCOL_VERSION if reader.flag() else reader.u8()
        listed = reader.flag()
        name = _NAMES[reader.u8() % len(_NAMES)] if listed else reader.take(reader.u8() % 40)
        port = reader.u16()
        der = identity("Mallory").public_der if reader.flag() else reader.take(reader.u16() % 600)
        signed = signature if reader.flag() else reader.take(reader.u16() % 400)
        return (
            bytes((version, len(name)))
            + name
            + port.to_bytes(2, "big")
            + len(der).to_bytes(2, "big")
            + der
            + len(signed).to_bytes(2, "big")
            + signed
            + reader.take(reader.u8() % 3)  # trailing bytes, if the fuzzer wants some
        )

    @staticmethod
    def _judge(data: bytes) -> str:
        data = data[: MAX_HANDSHAKE_PAYLOAD + 16]
        victim = SecureChannel(Role.INITIATOR, credentials("Alice"))
        static, _ = rogue_static()
        rogue = HandshakeState(PROTOCOL_NAME, initiator=False, prologue=PROLOGUE, s=static)
        rogue.read_message(victim.data_to_send()[FRAME_HEADER_SIZE:])
        try:
            fields = parse_hello_payload(data)
        except ProtocolError:
            fields = None
        try:
            events = victim.receive_data(encode_frame(rogue.write_message(data)))
        except ProtocolError:
            check(victim.state is ChannelState.CLOSED, "a failed channel stays open")
            check(victim.data_to_send() == b"", "a failed channel still sends")
            return "payload refused" if fields is None else "signature refused"
        check(fields is not None, "the channel accepted a payload the parser refuses")
        check(victim.state is ChannelState.ESTABLISHED, "not established")
        peer = victim.peer
        check(peer is not None and events == [HandshakeComplete(peer)], "no handshake event")
        assert peer is not None and fields is not None
        check(peer.identity_der == identity("Mallory").public_der, "another identity")
        check(validate_name(peer.name) == fields.name == peer.name, "an invalid name passed")
        check(1 <= peer.listen_port <= 65535, "port")
        return "authenticated"


# -- beacons -----------------------------------------------------------------------------


@functools.cache
def signed_beacons() -> list[bytes]:
    """Genuine beacons of two keys, two runs each, in sequence, for the fuzzer to replay."""
    datagrams = []
    for who in ("Alice", "Mallory"):
        for run, instance in enumerate((b"\x01" * 16, b"\x02" * 16)):
            for seq in range(3):
                stamp = NOW + 10 * run + seq
                datagrams.append(encode_beacon(identity(who), who, 5000, instance, seq, stamp))
    return datagrams


class BeaconTarget(Target):
    """A sequence of datagrams (raw bytes, or genuine beacons picked by number) from a few
    source addresses at times the fuzzer picks, judged by one filter with its rate
    limits lifted and one with the real limits."""

    DEEP = frozenset({"accepted", "bad signature", "replay", "stale", "self", "rate limited"})
    SOURCES: Final = ("10.0.0.1", "10.0.0.2", "10.0.0.3")
    MAX_DATAGRAMS: Final = 16

    def runtime_seeds(self) -> list[bytes]:
        datagrams = signed_beacons()
        # Every genuine beacon in turn, from one address, time standing still.
        in_turn = Writer().flag(False)
        for index in range(len(datagrams)):
            in_turn.flag(True).u8(index).u8(0).u8(80)
        # A genuine beacon as raw bytes (for the fuzzer to change), then again by number.
        raw = Writer().flag(True).flag(False).sized(datagrams[0]).u8(1).u8(80)
        raw.flag(True).u8(0).u8(1).u8(80)
        return [in_turn.done(), raw.done()]

    def run(self, data: bytes) -> str:
        genuine = signed_beacons()
        reader = Reader(data)
        own = identity("Alice").fingerprint if reader.flag() else identity("Own").fingerprint
        deep = BeaconFilter(own, rate=1e9, burst=1e9, global_rate=1e9, max_sources=2, max_peers=2)
        strict = BeaconFilter(own, max_sources=2, max_peers=2)
        deepest = "nothing"
        accepted: set[tuple[str, bytes, int]] = set()
        now = NOW
        for _ in range(self.MAX_DATAGRAMS):
            if not reader.remaining:
                break
            # One datagram: a genuine beacon by number, or bytes; its source; time passing.
            if reader.flag():
                datagram = genuine[reader.u8() % len(genuine)]
            else:
                datagram = reader.take(reader.u16())
            source = self.SOURCES[reader.u8() % len(self.SOURCES)]
            now += (reader.u8() - 80) / 2
            with contextlib.suppress(ProtocolError):
                decode_beacon(datagram)
            for beacon_filter in (deep, strict):
                result = beacon_filter.check(datagram, source, now)
                tracked = (beacon_filter.tracked_sources, beacon_filter.tracked_peers)
                check(max(tracked) <= 2, f"tracks {tracked} sources and keys, over the cap")
                if isinstance(result, BeaconAccepted):
                    beacon = result.beacon
                    # Whoever signed it (a corpus may keep beacons another run signed),
                    # the signature must cover exactly these bytes, by the key they carry.
                    _, signed, signature = decode_beacon(datagram)
                    valid = verify_signature(beacon.identity_der, signature, signed)
                    check(valid, "accepted a forgery")
                    check(beacon.fingerprint != own, "accepted our own beacon")
                    check(abs(now - beacon.timestamp) <= 30, "accepted a stale beacon")
                    key = (beacon.fingerprint, beacon.instance, beacon.seq)
                    if beacon_filter is deep:
                        check(key not in accepted, "accepted a replay")
                        accepted.add(key)
                    deepest = "accepted"
                elif deepest != "accepted":
                    reason = result.reason.split(":")[0]
                    deepest = reason if reason in self.DEEP or deepest == "nothing" else deepest
        return deepest


# -- an established channel --------------------------------------------------------------


def attacked_responder() -> tuple[SecureChannel, HandshakeState]:
    """Bob's channel after a real handshake with Mallory, who holds the raw Noise state,
    so she can seal any plaintext at all."""
    bob = SecureChannel(Role.RESPONDER, credentials("Bob"))
    static, _ = rogue_static()
    mallory = HandshakeState(PROTOCOL_NAME, initiator=True, prologue=PROLOGUE, s=static)
    check(bob.receive_data(encode_frame(mallory.write_message(b""))) == [], "early event")
    mallory.read_message(bob.data_to_send()[FRAME_HEADER_SIZE:])
    events = bob.receive_data(encode_frame(mallory.write_message(mallory_hello())))
    check(len(events) == 1 and isinstance(events[0], HandshakeComplete), "handshake failed")
    return bob, mallory


class EstablishedChannelTarget(Target):
    """Plaintexts the fuzzer picks, each sealed in a valid transport frame after a real
    handshake, sent in chunks: every message up to the first invalid one arrives, in
    order and unchanged; the invalid one closes the channel and nothing after it arrives."""

    DEEP = frozenset({"every message", "messages, then refused"})

    def run(self, data: bytes) -> str:
        reader = Reader(data)
        count = reader.pick(1, 6)
        chunk = reader.pick(1, 4096)
        plaintexts = [reader.take(reader.u16()) for _ in range(count)]
        bob, mallory = attacked_responder()
        sending, _ = mallory.split()
        wire = b"".join(encode_frame(sending.encrypt(p)) for p in plaintexts)
        expected: list[Message] = []
        valid = True
        for plain in plaintexts:
            try:
                expected.append(decode_message(plain))
            except ProtocolError:
                valid = False
                break
        got: list[Message] = []
        refused = False
        try:
            for start in range(0, len(wire), chunk):
                for event in bob.receive_data(wire[start : start + chunk]):
                    check(isinstance(event, MessageReceived), f"unexpected {event!r}")
                    assert isinstance(event, MessageReceived)
                    got.append(event.message)
        except ProtocolError:
            refused = True
            check(bob.state is ChannelState.CLOSED, "a failed channel stays open")
        check(got == expected[: len(got)], "a message changed on the way")
        check(refused != valid, f"refused {refused} though the messages are valid: {valid}")
        if valid:
            check(got == expected, "a message went missing")
            bob.receive_eof()
            check(bob.state is ChannelState.CLOSED, "a clean end left the channel open")
        if not got:
            return "refused the first message"
        return "every message" if valid else "messages, then refused"


# -- the node's handling of what arrives -----------------------------------------------------


class NodeMessagesTarget(Target):
    """Decoded messages as the node handles them: chats stored with `receive_chats` into a
    real history (a temporary folder), the new ones shown with the menu's `describe_event`,
    the history shown with `format_history_row`; acknowledgements applied to a queue of
    messages waiting for the sender. Whatever a peer sends, nothing raises, every line
    shown is one safe line, and only new messages are shown."""

    DEEP = frozenset({"stored and shown"})
    HOSTS: Final = ("127.0.0.1", "10.0.0.7", "fe80::1")
    RESET_AFTER: Final = 2000  # rows, so the history stays small

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="peer_chat_fuzz_")
        self._sealer = Sealer.generate()
        self._opened = 0
        self._open()

    def _open(self) -> None:
        self._opened += 1
        path = Path(self._folder.name) / f"history{self._opened}.db"
        self.store = HistoryStore.open(path, self._sealer)
        self.seen: set[str] = set()
        self.problems: list[str] = []
        self.outbox = Delivery(self.store, self.problems.append)
        self.queued = [
            outgoing_message(
                identity("Mallory").fingerprint,
                "Mallory",
                "10.0.0.7",
                6000,
                f"q{n}",
                state=DeliveryState.PENDING,
                now=NOW,
            )
            for n in range(4)
        ]
        self.outbox.enqueue(self.queued)
        self.outbox.take_chats(identity("Mallory").fingerprint)

    def runtime_seeds(self) -> list[bytes]:
        ack = encode_message(Ack((self.queued[0].msg_id,)))
        chat = encode_message(Chat("01" * 16, NOW, "hi"))
        return [node_input("Alice", 5000, [chat, ack, chat])]

    def run(self, data: bytes) -> str:
        if len(self.seen) > self.RESET_AFTER:
            self.store.close()
            self._open()
        reader = Reader(data)
        try:  # the handshake lets no other name through
            name = validate_name(reader.take(reader.u8() % 48).decode("utf-8", "replace"))
        except ValueError:
            name = "Mallory"
        host = self.HOSTS[reader.u8() % len(self.HOSTS)]
        port = reader.pick(1, 65535)
        messages: list[Message] = []
        for _ in range(reader.pick(0, 8)):
            try:  # an undecodable frame closes the session: nothing after it is handled
                messages.append(decode_message(reader.take(reader.u16())))
            except ProtocolError:
                break
        stage = "nothing to store"
        # As the node: consecutive chats are stored as one batch, before what follows them.
        batch: list[Chat] = []
        for message in [*messages, None]:
            if isinstance(message, Chat):
                batch.append(message)
                continue
            if batch:
                self._receive(name, host, port, batch)
                stage = "stored and shown"
                batch = []
            if isinstance(message, Ack):
                done = self.outbox.acknowledge(identity("Mallory").fingerprint, message.msg_ids)
                check({r.msg_id for r in done} <= set(message.msg_ids), "acknowledged others")
        for row in self.store.history(limit=20):
            check_one_safe_line(format_history_row(row), "a history row")
        check(self.problems == [], f"problems: {self.problems}")
        return stage

    def _receive(self, name: str, host: str, port: int, batch: list[Chat]) -> None:
        fp = identity("Mallory").fingerprint
        received = delivery.receive_chats(self.store, fp, name, host, port, batch, now=NOW)
        check(received.ack_ids == tuple(c.msg_id for c in batch), "not every id acknowledged")
        new: list[Chat] = []
        for chat in batch:
            if chat.msg_id not in self.seen:
                self.seen.add(chat.msg_id)
                new.append(chat)
        check(list(received.fresh) == new, "shown something already shown, or hid a new one")
        for chat in received.fresh:
            line = describe_event(MessageArrived(name, host, port, fp, chat.text))
            check_one_safe_line(line, "a received message")


TARGETS: Final[dict[str, Callable[[], Target]]] = {  # in the order of tests.fuzz.NAMES
    "frame_decoder": FrameDecoderTarget,
    "message_decoder": MessageDecoderTarget,
    "hello_payload": HelloPayloadTarget,
    "beacon": BeaconTarget,
    "established_channel": EstablishedChannelTarget,
    "node_messages": NodeMessagesTarget,
}


def hello_input(name: str, port: int) -> bytes:
    """A payload laid out field by field: version, name, port, Mallory's key and signature."""
    raw = name.encode()
    seed = Writer().flag(True).flag(True).flag(False).u8(len(raw)).put(raw).u16(port)
    return seed.flag(True).flag(True).done()


def node_input(name: str, port: int, messages: list[bytes]) -> bytes:
    raw = name.encode()
    seed = Writer().u8(len(raw)).put(raw).u8(0).pick(1, 65535, port).pick(0, 8, len(messages))
    for message in messages:
        seed.sized(message)
    return seed.done()


def frames_input(limit: int, one_at_a_time: bool, chunks: list[int], frames: list[bytes]) -> bytes:
    seed = Writer().pick(1, 600, limit).flag(one_at_a_time).pick(1, 8, len(chunks))
    for size in chunks:
        seed.pick(1, 80, size)
    seed.pick(0, 6, len(frames))
    for frame in frames:
        seed.sized(frame)
    return seed.done()


def channel_input(chunk: int, plaintexts: list[bytes]) -> bytes:
    seed = Writer().pick(1, 6, len(plaintexts)).pick(1, 4096, chunk)
    for plain in plaintexts:
        seed.sized(plain)
    return seed.done()


# Seeds that need no key of this process, stored in tests/fuzz/corpus/<target>/ and
# rebuilt from here with `python -m tests.fuzz --write-seeds`.
_MESSAGES: Final = [
    encode_message(m)
    for m in (
        Chat("ab" * 16, NOW, "hi ü"),
        Ack(("cd" * 16, "ef" * 16)),
        Ping(1),
        Pong(2),
        Bye("done"),
    )
]

_UNSIGNED_BEACON: Final = (
    struct.pack(">4sBBHHHd16sQ", b"PCHB", 1, 3, 5, 8, 5000, NOW, bytes(16), 0)
    + b"Eve"
    + b"\x30\x03\x02\x01\x01"
    + bytes(8)
)

STORED_SEEDS: Final[dict[str, list[bytes]]] = {
    "frame_decoder": [
        frames_input(40, False, [64], [b"a", b"bb", b"c" * 40]),
        frames_input(40, False, [3, 7], [b"hello", b"abc"]) + _PACK_LENGTH(41),
        frames_input(5, True, [1], [b"12345", b""]),
    ],
    "message_decoder": _MESSAGES,
    "hello_payload": [
        # As it is: a payload that parses, with a key and signature of nobody.
        Writer()
        .flag(False)
        .put(encode_hello_payload(name="Eve", listen_port=1, identity_der=b"0", signature=b"s"))
        .done(),
        # Field by field: a listed name, Mallory's real key, a signature of bytes.
        Writer()
        .flag(True)
        .flag(True)
        .flag(True)
        .u8(0)
        .u16(1)
        .flag(True)
        .flag(False)
        .u16(1)
        .put(b"s")
        .done(),
    ],
    "beacon": [
        # A well-formed beacon from a key nobody holds: judged up to its signature.
        Writer().flag(False).flag(False).sized(_UNSIGNED_BEACON).u8(0).u8(80).done()
    ],
    "established_channel": [
        channel_input(100, _MESSAGES),
        channel_input(7, [_MESSAGES[0], b"\x09junk"]),
    ],
    "node_messages": [node_input("Bob", 5001, [_MESSAGES[0], _MESSAGES[1], _MESSAGES[4]])],
}

"""An authenticated, encrypted session between two peers, as a pure state machine.

The channel runs Noise_XX_25519_AESGCM_SHA256 (prologue b"peer_chat/1") over
length-prefixed frames, then carries one encoded message per transport frame.

    initiator                                     responder
      | -- msg 1: e ------------------------------> |
      | <-- msg 2: e, ee, s, es, {hello_R} -------- |
      | -- msg 3: s, se, {hello_I} ---------------> |
      | <========== transport frames ============> |

Each hello carries the sender's RSA identity key and an RSA-PSS signature by
it over STATIC_KEY_CONTEXT + the sender's Noise static public key. Noise proves
the peer holds that static key; the signature ties the static key to the
identity, so the identity is proven without RSA work per handshake on the
signing side (Credentials signs once per process start). The signature is
checked against the static key the handshake actually authenticated (`rs`),
never against anything the payload claims.

Transitions (one table, `_TRANSITIONS`):
    HANDSHAKING -> ESTABLISHED (after the last handshake message) | CLOSED
    ESTABLISHED -> CLOSED
Any error closes the channel for good: the outgoing buffer is dropped, the
keys are forgotten, `ProtocolError` is raised and no event from that call is
returned.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final, NoReturn, cast

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from crypto_utils import Identity, fingerprint_of, load_public_key, verify_with_key
from peerchat.errors import ProtocolError
from peerchat.limits import (
    MAX_FRAME_SIZE,
    MAX_HANDSHAKE_PAYLOAD,
    MAX_IDENTITY_KEY_BYTES,
    MAX_SIGNATURE_BYTES,
    PROTOCOL_VERSION,
)
from peerchat.policy.sanitize import validate_name
from peerchat.protocol.framing import FrameDecoder, encode_frame
from peerchat.protocol.messages import Message, decode_message, encode_message
from peerchat.protocol.noise import DHLEN, TAGLEN, CipherState, HandshakeState, public_bytes

logger = logging.getLogger(__name__)

PROTOCOL_NAME: Final = "Noise_XX_25519_AESGCM_SHA256"
PROLOGUE: Final = b"peer_chat/1"
STATIC_KEY_CONTEXT: Final = b"peer_chat/1 noise static key\x00"

# Handshake messages are small; frames stay this small until the peer is authenticated.
_MSG1_SIZE: Final = DHLEN  # e, and an empty payload
_MSG2_MAX: Final = DHLEN + DHLEN + TAGLEN + MAX_HANDSHAKE_PAYLOAD + TAGLEN
_MSG3_MAX: Final = DHLEN + TAGLEN + MAX_HANDSHAKE_PAYLOAD + TAGLEN

_U8: Final = struct.Struct(">B")
_U16: Final = struct.Struct(">H")
_pack_len = struct.Struct(">I").pack


class Role(Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class ChannelState(Enum):
    HANDSHAKING = "handshaking"
    ESTABLISHED = "established"
    CLOSED = "closed"


_TRANSITIONS: Final = {
    ChannelState.HANDSHAKING: frozenset({ChannelState.ESTABLISHED, ChannelState.CLOSED}),
    ChannelState.ESTABLISHED: frozenset({ChannelState.CLOSED}),
    ChannelState.CLOSED: frozenset({ChannelState.CLOSED}),
}


def _check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is outside 1..65535")
    return port


@dataclass(frozen=True)
class Credentials:
    """What this peer proves about itself in every handshake."""

    name: str
    listen_port: int
    identity_der: bytes
    static_private: X25519PrivateKey = field(repr=False)  # Noise static key, fresh per start
    static_signature: bytes  # identity signature over STATIC_KEY_CONTEXT + static public

    @classmethod
    def create(cls, identity: Identity, name: str, listen_port: int) -> Credentials:
        """Fresh Noise static key, signed once here so handshakes need no RSA signing."""
        static = X25519PrivateKey.generate()
        return cls(
            name=validate_name(name),
            listen_port=_check_port(listen_port),
            identity_der=identity.public_der,
            static_private=static,
            static_signature=identity.sign(STATIC_KEY_CONTEXT + public_bytes(static)),
        )


@dataclass(frozen=True)
class PeerHello:
    """What the remote peer proved in the handshake."""

    name: str
    listen_port: int
    identity_der: bytes
    fingerprint: str
    version: int


@dataclass(frozen=True)
class HandshakeComplete:
    peer: PeerHello


@dataclass(frozen=True, slots=True)
class MessageReceived:
    message: Message


_new = object.__new__
_set_message = cast(Any, MessageReceived).message.__set__


def _received(message: Message) -> MessageReceived:
    # As messages.decode_message does: skip the frozen __init__ on the hot path.
    event: MessageReceived = _new(MessageReceived)
    _set_message(event, message)
    return event


Event = HandshakeComplete | MessageReceived


@dataclass(frozen=True)
class HelloFields:
    """A handshake payload as parsed, before anything in it is trusted."""

    version: int
    name: str
    listen_port: int
    identity_der: bytes
    signature: bytes


def encode_hello_payload(
    *,
    name: str,
    listen_port: int,
    identity_der: bytes,
    signature: bytes,
    version: int = PROTOCOL_VERSION,
) -> bytes:
    """version u8 | name_len u8 | name | port u16 | der_len u16 | der | sig_len u16 | sig."""
    raw_name = name.encode("utf-8")
    if len(raw_name) > 0xFF or len(identity_der) > 0xFFFF or len(signature) > 0xFFFF:
        raise ValueError("handshake payload field too long")
    out = b"".join(
        (
            _U8.pack(version),
            _U8.pack(len(raw_name)),
            raw_name,
            _U16.pack(listen_port),
            _U16.pack(len(identity_der)),
            identity_der,
            _U16.pack(len(signature)),
            signature,
        )
    )
    if len(out) > MAX_HANDSHAKE_PAYLOAD:
        raise ValueError(f"handshake payload over {MAX_HANDSHAKE_PAYLOAD} bytes")
    return out


def _bounded(size: int, limit: int, what: str) -> int:
    if size > limit:
        raise ProtocolError(f"{what} of {size} bytes is over {limit}")
    return size


def parse_hello_payload(data: bytes) -> HelloFields:
    """Strict parse of a handshake payload; ProtocolError on anything unexpected."""
    if not 0 < len(data) <= MAX_HANDSHAKE_PAYLOAD:
        raise ProtocolError("handshake payload is empty or too large")
    version = data[0]
    if version != PROTOCOL_VERSION:  # checked first: later versions may change the layout
        raise ProtocolError(f"unsupported protocol version {version}")
    pos = 1

    def take(size: int) -> bytes:
        nonlocal pos
        chunk = data[pos : pos + size]
        if len(chunk) != size:
            raise ProtocolError("handshake payload truncated")
        pos += size
        return chunk

    def u16() -> int:
        value: int = _U16.unpack(take(2))[0]
        return value

    raw_name = take(take(1)[0])
    try:
        name = validate_name(raw_name.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"bad peer name: {exc}") from None
    port = u16()
    if port == 0:
        raise ProtocolError("bad listen port 0")
    identity_der = take(_bounded(u16(), MAX_IDENTITY_KEY_BYTES, "identity key"))
    signature = take(_bounded(u16(), MAX_SIGNATURE_BYTES, "signature"))
    if pos != len(data):
        raise ProtocolError("trailing bytes after the handshake payload")
    if not identity_der or not signature:
        raise ProtocolError("handshake payload lacks a key or signature")
    return HelloFields(version, name, port, identity_der, signature)


class SecureChannel:
    """One connection's handshake and transport; fed bytes, it returns events."""

    def __init__(self, role: Role, credentials: Credentials) -> None:
        self._role = role
        self._creds = credentials
        self._state = ChannelState.HANDSHAKING
        self._peer: PeerHello | None = None
        self._decoder = FrameDecoder(_MSG2_MAX)
        self._out: list[bytes] = []
        self._send: CipherState | None = None
        self._recv: CipherState | None = None
        self._hs: HandshakeState | None = HandshakeState(
            PROTOCOL_NAME,
            initiator=role is Role.INITIATOR,
            prologue=PROLOGUE,
            s=credentials.static_private,
        )
        self._hs_step = 0  # handshake messages processed (read or written)
        self._handshake_hash: bytes | None = None
        if role is Role.INITIATOR:
            self._out.append(encode_frame(self._hs.write_message(b"")))
            self._hs_step = 1

    @property
    def state(self) -> ChannelState:
        return self._state

    @property
    def role(self) -> Role:
        return self._role

    @property
    def peer(self) -> PeerHello | None:
        return self._peer

    @property
    def handshake_hash(self) -> bytes | None:
        """Noise's final `h` once established: equal on both ends, unique to this session.

        It hashes every handshake byte (both ephemeral and static keys, both hellos),
        so a man in the middle ends up with a different value on each side. It is not
        secret; it names the session (channel binding for code comparison).
        """
        return self._handshake_hash

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed received bytes; return the events they complete (ProtocolError on any fault)."""
        recv = self._recv
        try:
            if recv is not None:  # established: the hot path (a plain loop is fastest here)
                decrypt = recv.decrypt
                events: list[Event] = []
                for body in self._decoder.feed(data):
                    events.append(_received(decode_message(decrypt(body))))
                return events
            if self._state is ChannelState.CLOSED:
                raise ProtocolError("data received on a closed channel")
            return self._receive_handshaking(data)
        except ProtocolError as exc:
            self._fail(str(exc))

    def _receive_handshaking(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        decoder = self._decoder
        # One frame at a time: the frame limit grows once the peer is authenticated.
        while self._hs is not None:
            frames = decoder.feed(data, 1)
            data = b""
            if not frames:
                return events
            if (done := self._handshake_frame(frames[0])) is not None:
                events.append(done)
        # Transport frames that arrived with the last handshake message.
        recv = self._recv
        assert recv is not None
        events.extend(_received(decode_message(recv.decrypt(b))) for b in decoder.feed(b""))
        return events

    def _handshake_frame(self, body: bytes) -> HandshakeComplete | None:
        hs = self._hs
        assert hs is not None
        step = self._hs_step
        if step == 0:  # responder: message 1
            if len(body) != _MSG1_SIZE:
                raise ProtocolError("handshake message 1 has the wrong size")
            hs.read_message(body)
            self._out.append(encode_frame(hs.write_message(self._hello())))
            self._hs_step = 2
            return None
        if len(body) > (_MSG2_MAX if step == 1 else _MSG3_MAX):
            raise ProtocolError("handshake message too large")
        peer = self._authenticate(hs.read_message(body), hs.rs)
        if step == 1:  # initiator: message 2 read, message 3 answers it
            self._out.append(encode_frame(hs.write_message(self._hello())))
        self._send, self._recv = hs.split()
        self._handshake_hash = hs.handshake_hash
        self._hs = None  # forget the ephemeral keys
        self._peer = peer
        self._decoder.max_frame_size = MAX_FRAME_SIZE
        self._set_state(ChannelState.ESTABLISHED)
        logger.debug("%s handshake complete with %s", self._role.value, peer.fingerprint[:8])
        return HandshakeComplete(peer)

    def _hello(self) -> bytes:
        creds = self._creds
        return encode_hello_payload(
            name=creds.name,
            listen_port=creds.listen_port,
            identity_der=creds.identity_der,
            signature=creds.static_signature,
        )

    def _authenticate(self, payload: bytes, remote_static: bytes | None) -> PeerHello:
        hello = parse_hello_payload(payload)
        if remote_static is None:  # unreachable for XX: msg 2 and 3 carry `s`
            raise ProtocolError("handshake did not authenticate a static key")
        creds = self._creds
        if remote_static == public_bytes(creds.static_private):
            raise ProtocolError("peer presented our own static key (reflected handshake)")
        if hello.identity_der == creds.identity_der:
            raise ProtocolError("peer presented our own identity")
        try:  # cheap checks of the key before the one expensive step, the RSA verification
            key = load_public_key(hello.identity_der)
        except ProtocolError as exc:
            raise ProtocolError(f"identity key refused: {exc}") from None
        if not verify_with_key(key, hello.signature, STATIC_KEY_CONTEXT + remote_static):
            raise ProtocolError("identity signature does not cover the handshake's static key")
        return PeerHello(
            name=hello.name,
            listen_port=hello.listen_port,
            identity_der=hello.identity_der,
            fingerprint=fingerprint_of(hello.identity_der),
            version=hello.version,
        )

    def receive_eof(self) -> None:
        """The peer closed its side; ProtocolError if that cut a frame or the handshake."""
        if self._state is ChannelState.CLOSED:
            return
        if self._state is ChannelState.HANDSHAKING:
            self._fail("connection closed during the handshake")
        try:
            self._decoder.close()
        except ProtocolError as exc:
            self._fail(str(exc))
        self.close()

    def send_message(self, message: Message) -> None:
        """Queue one sealed frame; ProtocolError unless ESTABLISHED, ValueError if invalid."""
        send = self._send
        if send is None:
            raise ProtocolError(f"cannot send on a channel that is {self._state.value}")
        plaintext = encode_message(message)
        try:
            sealed = send.encrypt(plaintext)
        except ProtocolError as exc:
            self._fail(str(exc))
        self._out += (_pack_len(len(sealed)), sealed)

    def send_messages(self, messages: Iterable[Message]) -> None:
        """Queue many sealed frames at once (all are encoded before any nonce is used)."""
        send = self._send
        if send is None:
            raise ProtocolError(f"cannot send on a channel that is {self._state.value}")
        plaintexts = [encode_message(m) for m in messages]
        encrypt = send.encrypt
        out = self._out
        try:
            for plaintext in plaintexts:
                sealed = encrypt(plaintext)
                out += (_pack_len(len(sealed)), sealed)
        except ProtocolError as exc:
            self._fail(str(exc))

    def data_to_send(self) -> bytes:
        """Drain and return everything queued for the peer."""
        out = self._out
        if not out:
            return b""
        data = b"".join(out)
        out.clear()
        return data

    def close(self) -> None:
        """Close locally; bytes already queued (a Bye, say) can still be drained."""
        self._set_state(ChannelState.CLOSED)
        self._forget_keys()

    def _forget_keys(self) -> None:
        self._hs = None
        self._send = None
        self._recv = None

    def _fail(self, reason: str) -> NoReturn:
        logger.debug("%s channel failed: %s", self._role.value, reason)
        self._out.clear()
        self.close()
        raise ProtocolError(reason)

    def _set_state(self, new: ChannelState) -> None:
        if new not in _TRANSITIONS[self._state]:
            raise RuntimeError(f"channel cannot go from {self._state.value} to {new.value}")
        self._state = new

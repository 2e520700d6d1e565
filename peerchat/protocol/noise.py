"""The Noise XX handshake (revision 34) over Curve25519, from `cryptography` primitives.

Supports Noise_XX_25519_{AESGCM,ChaChaPoly}_{SHA256,BLAKE2b}; peer_chat uses
Noise_XX_25519_AESGCM_SHA256. Only what XX needs is here: no PSKs, no other
patterns. Keys can be injected so the published test vectors can be replayed.

    XX:
      -> e
      <- e, ee, s, es
      -> s, se

Everything a remote peer can get wrong (short messages, bad tags, low-order
points, exhausted nonces) raises `ProtocolError`; local misuse (writing out of
turn, an unknown protocol name) raises `ValueError`/`RuntimeError`.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from peerchat.errors import ProtocolError

DHLEN: Final = 32
TAGLEN: Final = 16
MAX_MESSAGE_LEN: Final = 65535  # Noise's own limit on one handshake or transport message
MAX_NONCE: Final = 2**64 - 1  # reserved by the spec: never used to encrypt

_Aead = AESGCM | ChaCha20Poly1305

# (constructor, nonce packer) per cipher name. The nonce is 4 zero bytes then the
# 64-bit counter: big-endian for AESGCM, little-endian for ChaChaPoly.
_CIPHERS: Final[dict[str, tuple[Callable[[bytes], _Aead], Callable[[int], bytes]]]] = {
    "AESGCM": (AESGCM, struct.Struct(">4xQ").pack),
    "ChaChaPoly": (ChaCha20Poly1305, struct.Struct("<4xQ").pack),
}
# hashlib name and HASHLEN per hash name.
_HASHES: Final = {"SHA256": ("sha256", 32), "BLAKE2b": ("blake2b", 64)}

# Message patterns of XX as token lists; message i is written by the initiator when i is even.
_XX: Final = (("e",), ("e", "ee", "s", "es"), ("s", "se"))


def public_bytes(key: X25519PrivateKey) -> bytes:
    """The raw 32-byte public key of an X25519 private key."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _dh(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as exc:  # low-order point: the shared secret would be all zeros
        raise ProtocolError("invalid Diffie-Hellman public key") from exc


class CipherState:
    """A key and a message counter; the AEAD object is built once per key."""

    __slots__ = ("_aead", "_pack_nonce", "cipher_name", "n")

    def __init__(self, cipher_name: str, key: bytes | None = None) -> None:
        if cipher_name not in _CIPHERS:
            raise ValueError(f"unsupported Noise cipher {cipher_name!r}")
        self.cipher_name = cipher_name
        self._pack_nonce = _CIPHERS[cipher_name][1]
        self._aead: _Aead | None = None
        self.n = 0
        self.initialize_key(key)

    def initialize_key(self, key: bytes | None) -> None:
        self._aead = None if key is None else _CIPHERS[self.cipher_name][0](key)
        self.n = 0

    def has_key(self) -> bool:
        return self._aead is not None

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        aead = self._aead
        if aead is None:
            return plaintext
        n = self.n
        if n >= MAX_NONCE:
            raise ProtocolError("nonce space exhausted; the session must end")
        self.n = n + 1
        return aead.encrypt(self._pack_nonce(n), plaintext, ad)

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        aead = self._aead
        if aead is None:
            return ciphertext
        n = self.n
        if n >= MAX_NONCE:
            raise ProtocolError("nonce space exhausted; the session must end")
        try:
            plaintext = aead.decrypt(self._pack_nonce(n), ciphertext, ad)
        except InvalidTag:
            raise ProtocolError("message authentication failed") from None
        self.n = n + 1  # only after success, as the spec requires
        return plaintext

    # Transport messages have empty associated data; these skip the handshake-only checks.
    def encrypt(self, plaintext: bytes) -> bytes:
        aead = self._aead
        n = self.n
        if aead is None or n >= MAX_NONCE:
            raise ProtocolError("no key, or nonce space exhausted; the session must end")
        self.n = n + 1
        return aead.encrypt(self._pack_nonce(n), plaintext, None)

    def decrypt(self, ciphertext: bytes) -> bytes:
        aead = self._aead
        n = self.n
        if aead is None or n >= MAX_NONCE:
            raise ProtocolError("no key, or nonce space exhausted; the session must end")
        try:
            plaintext = aead.decrypt(self._pack_nonce(n), ciphertext, None)
        except InvalidTag:
            raise ProtocolError("message authentication failed") from None
        self.n = n + 1
        return plaintext

    def rekey(self) -> None:
        if self._aead is None:
            raise RuntimeError("rekey without a key")
        key = self._aead.encrypt(self._pack_nonce(MAX_NONCE), bytes(32), b"")[:32]
        n = self.n
        self.initialize_key(key)
        self.n = n


class SymmetricState:
    """Chaining key, handshake hash and the handshake's CipherState."""

    __slots__ = ("_hash_name", "_hashlen", "ck", "cs", "h")

    def __init__(self, protocol_name: str) -> None:
        parts = protocol_name.split("_")
        if len(parts) != 5 or parts[:3] != ["Noise", "XX", "25519"]:
            raise ValueError(f"unsupported Noise protocol {protocol_name!r}")
        cipher_name, hash_name = parts[3], parts[4]
        if hash_name not in _HASHES:
            raise ValueError(f"unsupported Noise hash {hash_name!r}")
        self._hash_name, self._hashlen = _HASHES[hash_name]
        self.cs = CipherState(cipher_name)
        name = protocol_name.encode("ascii")
        if len(name) <= self._hashlen:
            self.h = name + bytes(self._hashlen - len(name))
        else:
            self.h = self._hash(name)
        self.ck = self.h

    def _hash(self, data: bytes) -> bytes:
        return hashlib.new(self._hash_name, data).digest()

    def _hkdf(self, ikm: bytes, outputs: int) -> list[bytes]:
        name = self._hash_name
        temp = hmac.digest(self.ck, ikm, name)
        out = [hmac.digest(temp, b"\x01", name)]
        for i in range(2, outputs + 1):
            out.append(hmac.digest(temp, out[-1] + bytes((i,)), name))
        return out

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = self._hkdf(ikm, 2)
        self.cs.initialize_key(temp_k[:32])

    def mix_hash(self, data: bytes) -> None:
        self.h = self._hash(self.h + data)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cs.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cs.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        k1, k2 = self._hkdf(b"", 2)
        name = self.cs.cipher_name
        return CipherState(name, k1[:32]), CipherState(name, k2[:32])


class HandshakeState:
    """One side of an XX handshake.

    `s` is the local static key (XX always sends it); `e` may be injected for
    test vectors, otherwise a fresh ephemeral key is generated when it is sent.
    Messages alternate: the initiator writes messages 0 and 2, the responder 1.
    """

    __slots__ = ("_e", "_s", "_split", "_ss", "_step", "initiator", "re", "rs")

    def __init__(
        self,
        protocol_name: str,
        *,
        initiator: bool,
        prologue: bytes,
        s: X25519PrivateKey,
        e: X25519PrivateKey | None = None,
    ) -> None:
        self._ss = SymmetricState(protocol_name)
        self._ss.mix_hash(prologue)
        self.initiator = initiator
        self._s = s
        self._e = e
        self.re: bytes | None = None
        self.rs: bytes | None = None
        self._step = 0
        self._split: tuple[CipherState, CipherState] | None = None

    @property
    def complete(self) -> bool:
        return self._split is not None

    @property
    def handshake_hash(self) -> bytes:
        return self._ss.h

    @property
    def is_my_turn(self) -> bool:
        return self._split is None and (self._step % 2 == 0) == self.initiator

    def write_message(self, payload: bytes) -> bytes:
        """The next handshake message carrying `payload` (encrypted once a key exists)."""
        if not self.is_my_turn:
            raise RuntimeError("not this side's turn to write a handshake message")
        ss = self._ss
        out: list[bytes] = []
        for op in _XX[self._step]:  # the pattern's tokens
            if op == "e":
                if self._e is None:
                    self._e = X25519PrivateKey.generate()
                e_pub = public_bytes(self._e)
                ss.mix_hash(e_pub)
                out.append(e_pub)
            elif op == "s":
                out.append(ss.encrypt_and_hash(public_bytes(self._s)))
            else:
                ss.mix_key(self._token_dh(op))
        out.append(ss.encrypt_and_hash(payload))
        message = b"".join(out)
        if len(message) > MAX_MESSAGE_LEN:
            raise ValueError("handshake payload too large for one Noise message")
        self._advance()
        return message

    def read_message(self, message: bytes) -> bytes:
        """Process the peer's next handshake message and return its payload."""
        if self._split is not None or (self._step % 2 == 0) != (not self.initiator):
            raise ProtocolError("unexpected handshake message")
        if len(message) > MAX_MESSAGE_LEN:
            raise ProtocolError("handshake message too long")
        ss = self._ss
        pos = 0
        for op in _XX[self._step]:  # the pattern's tokens
            if op == "e":
                self.re = message[pos : pos + DHLEN]
                if len(self.re) != DHLEN:
                    raise ProtocolError("handshake message too short")
                pos += DHLEN
                ss.mix_hash(self.re)
            elif op == "s":
                size = DHLEN + TAGLEN if ss.cs.has_key() else DHLEN
                chunk = message[pos : pos + size]
                if len(chunk) != size:
                    raise ProtocolError("handshake message too short")
                pos += size
                self.rs = ss.decrypt_and_hash(chunk)
            else:
                ss.mix_key(self._token_dh(op))
        if ss.cs.has_key() and len(message) - pos < TAGLEN:
            raise ProtocolError("handshake message too short")
        payload = ss.decrypt_and_hash(message[pos:])
        self._advance()
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """(sending, receiving) transport CipherStates for this side."""
        if self._split is None:
            raise RuntimeError("handshake not complete")
        c1, c2 = self._split
        return (c1, c2) if self.initiator else (c2, c1)

    def _token_dh(self, op: str) -> bytes:
        # In "es" the initiator's ephemeral meets the responder's static; "se" the reverse.
        e, s, re, rs = self._e, self._s, self.re, self.rs
        if op == "ee":
            local, remote = e, re
        elif op == "es":
            local, remote = (e, rs) if self.initiator else (s, re)
        else:  # "se"
            local, remote = (s, re) if self.initiator else (e, rs)
        if local is None or remote is None:  # unreachable for XX, kept for the type checker
            raise RuntimeError(f"missing key for {op}")
        return _dh(local, remote)

    def _advance(self) -> None:
        self._step += 1
        if self._step == len(_XX):
            self._split = self._ss.split()

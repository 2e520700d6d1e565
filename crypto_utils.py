"""Long-term identity, fingerprints, signatures and at-rest sealing.

A peer *is* its RSA key: its ID is a fingerprint of the public key, and names
and addresses are only hints. This module owns the key files in the data
directory:

- ``private.pem``: RSA private key, PKCS#8 PEM, mode 0600; encrypted with the
  passphrase when one is given. New keys are 3072-bit; keys of 2048 to 4096
  bits with public exponent 65537 load.
- ``public.pem``: the matching SubjectPublicKeyInfo PEM. It is derived data:
  if it is missing, unreadable or does not match ``private.pem`` it is
  rewritten from the private key (the old content is kept as
  ``public.pem.bak``).
- ``secret.key``: this peer's own Fernet key for sealing history at rest,
  never shared. Without a passphrase it holds the plain Fernet key; with one,
  the Fernet key sealed under scrypt(passphrase) + AES-GCM behind a small
  versioned header (see ``_SealedKeyHeader``).

A file that exists but cannot be used is never overwritten or deleted: the
user gets one clear ``KeyFileError`` line naming it. A passphrase given for a
key that is stored unencrypted is not an error: the key loads and a warning is
logged (the files are not rewritten behind the user's back).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import os
import secrets
import stat
import struct
import tempfile
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from peerchat.errors import KeyFileError, ProtocolError, StorageError
from peerchat.limits import MAX_IDENTITY_KEY_BYTES

logger = logging.getLogger(__name__)

FINGERPRINT_CHARS: Final = 52
SHORT_ID_CHARS: Final = 8
FINGERPRINT_GROUP: Final = 4

NEW_KEY_BITS: Final = 3072
MIN_KEY_BITS: Final = 2048
MAX_KEY_BITS: Final = 4096  # verification cost grows with the size: bounded against floods
PUBLIC_EXPONENT: Final = 65537  # the only one accepted: a huge exponent makes checks ~85x slower
PSS_SALT_LENGTH: Final = 32  # = SHA-256 digest length

PRIVATE_KEY_FILE: Final = "private.pem"
PUBLIC_KEY_FILE: Final = "public.pem"
SECRET_KEY_FILE: Final = "secret.key"  # noqa: S105 (a file name)
PASSPHRASE_ENV: Final = "PEER_CHAT_PASSPHRASE"  # noqa: S105 (a variable name)

_FILE_MODE: Final = 0o600
_DIR_MODE: Final = 0o700
_MAX_KEY_FILE_BYTES: Final = 64 * 1024
_SEAL_V2: Final = b"\x02"  # earlier history bodies: AES-256-GCM, no associated data
_SEAL_V3: Final = b"\x03"  # history bodies: AES-256-GCM bound to their row, with a key check
_SEAL_NONCE: Final = 12
_SEAL_KEY_CHECK: Final = 4
_SEAL_INFO: Final = b"peer_chat/1 history seal"
_SEAL_CHECK_INFO: Final = b"peer_chat/1 history seal key check"
_SELF_TEST_DATA: Final = b"peer_chat/key-self-test"

_PSS: Final = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_LENGTH)
_SHA256: Final = hashes.SHA256()


# --------------------------------------------------------------------------- fingerprints


def fingerprint_of(public_der: bytes) -> str:
    """The canonical peer ID: base32 of SHA-256 over the SubjectPublicKeyInfo DER.

    Why this form (the references are Syncthing device IDs and Signal safety
    numbers):

    - It hashes the whole SubjectPublicKeyInfo, so the ID commits to the key
      type and parameters as well as the modulus, and any key format yields an
      ID of the same length. SHA-256 keeps the full 256 bits: the ID is what
      trust decisions compare, so no truncation that would make a second key
      with the same ID cheaper to find.
    - Base32 (RFC 4648 alphabet, upper case, padding dropped) is what
      Syncthing uses for device IDs: one case, no punctuation, and no 0/O or
      1/I/L pairs to confuse (its digits are 2-7), so it survives being read
      aloud, typed or written down. 256 bits give exactly 52 characters.
    - People compare it in groups, as Signal's safety numbers are compared in
      blocks: ``format_fingerprint`` splits it into 13 groups of 4.
    """
    digest = hashlib.sha256(public_der).digest()
    return base64.b32encode(digest).decode("ascii").rstrip("=")


def short_id(fingerprint: str) -> str:
    """The first 8 characters (40 bits): enough to tell peers apart in a menu.

    Not enough to authenticate anyone: verification compares the full form.
    """
    return fingerprint[:SHORT_ID_CHARS]


def format_fingerprint(fingerprint: str) -> str:
    """The full fingerprint in groups of 4 separated by '-', for reading aloud."""
    return "-".join(
        fingerprint[i : i + FINGERPRINT_GROUP]
        for i in range(0, len(fingerprint), FINGERPRINT_GROUP)
    )


def is_fingerprint(value: str) -> bool:
    """True if `value` has the shape of a canonical fingerprint (52 base32 chars)."""
    if len(value) != FINGERPRINT_CHARS:
        return False
    try:
        base64.b32decode(value + "====", casefold=False)
    except (binascii.Error, ValueError):
        return False
    return True


# --------------------------------------------------------------------------- signatures


def identity_key_problem(key: RSAPublicKey) -> str | None:
    """Why `key` cannot be an identity key, or None. Cheap: no RSA arithmetic."""
    bits = key.key_size
    exponent = key.public_numbers().e
    if not MIN_KEY_BITS <= bits <= MAX_KEY_BITS or exponent != PUBLIC_EXPONENT:
        shown = exponent if exponent.bit_length() <= 32 else f"of {exponent.bit_length()} bits"
        return (
            f"RSA key of {bits} bits with public exponent {shown}: identity keys are "
            f"{MIN_KEY_BITS} to {MAX_KEY_BITS} bits with public exponent {PUBLIC_EXPONENT}"
        )
    return None


def load_public_key(public_der: bytes) -> RSAPublicKey:
    """Parse a peer's SubjectPublicKeyInfo DER; ProtocolError if unusable.

    Rejects oversized or malformed DER, non-RSA keys, keys outside 2048..4096
    bits or with an exponent other than 65537 (each would make verification
    costly), and non-canonical encodings (so one key has exactly one fingerprint).
    """
    if len(public_der) > MAX_IDENTITY_KEY_BYTES:
        raise ProtocolError(f"public key of {len(public_der)} bytes is too large for RSA-4096")
    try:
        key = serialization.load_der_public_key(public_der)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ProtocolError("malformed public key") from exc
    if not isinstance(key, RSAPublicKey):
        raise ProtocolError("public key is not RSA")
    problem = identity_key_problem(key)
    if problem is not None:
        raise ProtocolError(problem)
    canonical = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if canonical != public_der:
        raise ProtocolError("public key DER is not canonical")
    return key


def verify_with_key(key: RSAPublicKey, signature: bytes, data: bytes) -> bool:
    """RSA-PSS (MGF1-SHA256, salt 32) over SHA-256 by a loaded key. False, never an exception."""
    if len(signature) != (key.key_size + 7) // 8:
        return False
    try:
        key.verify(signature, data, _PSS, _SHA256)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def verify_signature(public_der: bytes, signature: bytes, data: bytes) -> bool:
    """RSA-PSS (MGF1-SHA256, salt 32) over SHA-256. False, never an exception."""
    try:
        key = load_public_key(public_der)
    except ProtocolError:
        return False
    return verify_with_key(key, signature, data)


def _public_der(private_key: RSAPrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class Identity:
    """This peer's long-term key pair and the ID derived from it."""

    private_key: RSAPrivateKey
    public_der: bytes  # SubjectPublicKeyInfo DER
    fingerprint: str  # fingerprint_of(public_der)

    @classmethod
    def from_private_key(cls, private_key: RSAPrivateKey) -> Identity:
        public_der = _public_der(private_key)
        return cls(private_key, public_der, fingerprint_of(public_der))

    @classmethod
    def generate(cls, key_size: int = NEW_KEY_BITS) -> Identity:
        """A fresh in-memory identity (tests and tools; KeyManager persists one)."""
        key = rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=key_size)
        return cls.from_private_key(key)

    @property
    def short_id(self) -> str:
        return short_id(self.fingerprint)

    def sign(self, data: bytes) -> bytes:
        """RSA-PSS (MGF1-SHA256, salt 32) over SHA-256."""
        return self.private_key.sign(data, _PSS, _SHA256)


# --------------------------------------------------------------------------- sealing at rest


class WrongSealKey(StorageError):
    """A body sealed under another secret.key (or an old-format body that does not open)."""


class Sealer:
    """Seals history bodies at rest with a key derived from this peer's secret.key.

    A body is b"\x03" + a 4-byte key check + a 12-byte random nonce +
    AES-256-GCM(text, associated data = the row it belongs to) under
    HKDF-SHA256(Fernet key, info=_SEAL_INFO): one AEAD call (~1.5 us) on the hot
    path of every stored message. The associated data binds a body to its row,
    so a body copied into another row fails to open. The key check (HKDF of the
    same key under another label, the same for every body) tells a body sealed
    under another secret.key (WrongSealKey) from one that was altered or moved
    (StorageError). Bodies of earlier versions still open: b"\x02" ones (the
    same AEAD without associated data or key check) and Fernet tokens (they
    start with b"gAAAAA"). Stateless, so one Sealer is safe from any thread.
    """

    __slots__ = ("_aead", "_check", "_fernet")

    def __init__(self, key: bytes) -> None:
        """`key` is a Fernet key (32 bytes, url-safe base64); ValueError otherwise."""
        self._fernet = Fernet(key)
        raw = base64.urlsafe_b64decode(key)
        subkey = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SEAL_INFO)
        self._aead = AESGCM(subkey.derive(raw))
        check = HKDF(
            algorithm=hashes.SHA256(), length=_SEAL_KEY_CHECK, salt=None, info=_SEAL_CHECK_INFO
        )
        self._check = check.derive(raw)

    @classmethod
    def generate(cls) -> Sealer:
        return cls(Fernet.generate_key())

    def seal(self, plaintext: bytes, associated_data: bytes = b"") -> bytes:
        """A body that opens only with this key and the same `associated_data`."""
        nonce = secrets.token_bytes(_SEAL_NONCE)
        return (
            _SEAL_V3 + self._check + nonce + self._aead.encrypt(nonce, plaintext, associated_data)
        )

    def open(self, token: bytes, associated_data: bytes = b"") -> bytes:
        """The plaintext; WrongSealKey for another key's body, StorageError if altered or moved.

        `associated_data` must be what the body was sealed with; bodies of
        earlier versions had none and open whatever it is.
        """
        try:
            if token[:1] == _SEAL_V3:
                start = 1 + _SEAL_KEY_CHECK
                if token[1:start] != self._check:
                    raise WrongSealKey(
                        "a stored message was sealed with another secret.key than this one"
                    )
                nonce = token[start : start + _SEAL_NONCE]
                try:
                    return self._aead.decrypt(nonce, token[start + _SEAL_NONCE :], associated_data)
                except (InvalidTag, ValueError) as exc:
                    raise StorageError(
                        "a stored message cannot be read: it was altered or moved to another row"
                    ) from exc
            if token[:1] == _SEAL_V2:
                nonce = token[1 : 1 + _SEAL_NONCE]
                return self._aead.decrypt(nonce, token[1 + _SEAL_NONCE :], None)
            return self._fernet.decrypt(token)
        except (InvalidToken, InvalidTag, ValueError) as exc:
            raise WrongSealKey(
                "a stored message cannot be decrypted: secret.key does not match this history"
            ) from exc


# --------------------------------------------------------------------------- passphrase


def read_passphrase(
    passphrase_file: Path | None, environ: MutableMapping[str, str]
) -> bytes | None:
    """The passphrase from `passphrase_file` (first line) or PEER_CHAT_PASSPHRASE.

    The file wins when both are given. Never a command-line value (it would
    show in `ps`). None when neither is set; KeyFileError for an unreadable
    file or an empty passphrase (an empty one would silently protect nothing).
    The variable is removed from `environ` either way (os.environ: from the
    process environment, so no child process and no later code sees it).
    """
    value = environ.pop(PASSPHRASE_ENV, None)
    if passphrase_file is not None:
        try:
            raw = passphrase_file.read_bytes()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise KeyFileError(f"cannot read passphrase file {passphrase_file}: {reason}") from exc
        with contextlib.suppress(OSError):
            if passphrase_file.stat().st_mode & 0o077:
                logger.warning("passphrase file %s is readable by other users", passphrase_file)
        line = raw.split(b"\n", 1)[0].removesuffix(b"\r")
        if not line:
            raise KeyFileError(f"passphrase file {passphrase_file} is empty")
        return line
    if value is None:
        return None
    if not value:
        raise KeyFileError(f"{PASSPHRASE_ENV} is set but empty")
    return os.fsencode(value)


# --------------------------------------------------------------------------- file helpers


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


# Files that make a folder a peer_chat profile (the history's name is the one peer_chat.py gives).
_PROFILE_FILES: Final = (PRIVATE_KEY_FILE, SECRET_KEY_FILE, "chat_history.db")


def make_private_dir(path: Path) -> str | None:
    """Create the data folder 0700, or tighten an existing one that others can read.

    Returns a warning for the user when the folder was loose, None when it was
    private already. An existing folder is tightened only when it is a
    peer_chat profile (empty, or holding its key or history files), owned by
    us and not a shared one (sticky, like /tmp): a folder that holds other
    things, such as a home directory, is the user's to change, so it is only
    warned about. OSError if the folder cannot be created.
    """
    path.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    if not mode & 0o077:
        return None
    loose = f"data folder {path} can be read by other users (mode {mode:04o})"
    ours = info.st_uid == os.geteuid() and not mode & stat.S_ISVTX
    names = {entry.name for entry in path.iterdir()}
    if not ours or (names and not names & set(_PROFILE_FILES)):
        return f"{loose} and holds other things: make it private yourself (chmod 700)"
    try:
        os.chmod(path, _DIR_MODE)
    except OSError as exc:
        return f"{loose} and cannot be made private: {_reason(exc)}"
    return f"{loose}: now 0700"


def _write_temp(directory: Path, name: str, data: bytes, mode: int) -> Path:
    """A fully written, fsynced temp file beside `name`, created with `mode` (no wider window)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)  # mkstemp creates 0600; make the final mode exact
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return Path(tmp)


def write_file_atomic(path: Path, data: bytes, mode: int = _FILE_MODE) -> None:
    """Replace `path` atomically: temp file with `mode` + fsync + os.replace + dir fsync."""
    tmp = _write_temp(path.parent, path.name, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _create_file_exclusive(path: Path, data: bytes, mode: int = _FILE_MODE) -> bool:
    """Create `path` atomically only if it does not exist; False if it already did.

    Hard-linking the finished temp file fails if `path` exists, so two
    processes starting at once never clobber each other's new key.
    """
    tmp = _write_temp(path.parent, path.name, data, mode)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:
            # Filesystems without hard links: fall back to a plain atomic rename.
            if path.exists():
                return False
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    _fsync_dir(path.parent)
    return True


def _read_key_file(path: Path) -> bytes:
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{path} is not a regular file")
        size = info.st_size
        if size > _MAX_KEY_FILE_BYTES:
            raise KeyFileError(f"{path} is corrupt: {size} bytes is far too large for a key file")
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {_reason(exc)}") from exc


def _check_private_mode(path: Path, *, fix: bool) -> None:
    """Key files must be 0600. A looser existing file is tightened (with a warning)."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError as exc:
        raise KeyFileError(f"cannot stat {path}: {_reason(exc)}") from exc
    if mode == _FILE_MODE:
        return
    if not fix:
        raise KeyFileError(
            f"{path} was created with mode {mode:04o}, not 0600 "
            "(does this filesystem support Unix permissions?)"
        )
    if mode & 0o077:
        logger.warning("%s had mode %04o; tightening to 0600", path, mode)
        try:
            os.chmod(path, _FILE_MODE)
        except OSError as exc:
            logger.warning("cannot change the mode of %s: %s", path, _reason(exc))


# --------------------------------------------------------------------------- sealed secret.key

# secret.key with a passphrase:
#   magic "PCSK" | version u8 (1) | log2(n) u8 | r u8 | p u8 | salt 16 | nonce 12 | AESGCM(...)
# The header (everything before the ciphertext) is the AEAD associated data, so
# the KDF parameters cannot be altered without failing the tag. The plaintext
# is the 44-byte url-safe base64 Fernet key.
_SEALED_MAGIC: Final = b"PCSK"
_SEALED_VERSION: Final = 1
_SEALED_HEADER: Final = struct.Struct(">4sBBBB16s12s")
# New files: n = 2^17 (128 MiB, ~0.5 s here), current guidance for interactive use.
# Each file records its own parameters, so files written with 2^15 still open.
_SCRYPT_LOG2_N: Final = 17
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 1
_SCRYPT_MAX_MEMORY: Final = 256 * 1024 * 1024  # refuse headers that would make us allocate GiBs


def _derive_key(passphrase: bytes, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=1 << log2_n, r=r, p=p).derive(passphrase)


# PKCS#8 encryption as `cryptography` writes it uses PBKDF2 with only 2048 rounds,
# cheap to guess against. The passphrase is therefore stretched with scrypt
# first, under a random salt kept on a line before the PEM block (PEM readers,
# OpenSSL's included, skip text before "-----BEGIN"). The line holds no secret.
_PEM_KDF_LABEL: Final = b"peer_chat-kdf: scrypt "


def _stretch_for_pem(passphrase: bytes) -> tuple[bytes, bytes]:
    """(header line, password for the PEM encryption) for a new private.pem."""
    salt = secrets.token_bytes(16)
    header = _PEM_KDF_LABEL + (
        f"log2n={_SCRYPT_LOG2_N} r={_SCRYPT_R} p={_SCRYPT_P} salt={salt.hex()}\n".encode()
    )
    key = _derive_key(passphrase, salt, _SCRYPT_LOG2_N, _SCRYPT_R, _SCRYPT_P)
    return header, base64.urlsafe_b64encode(key)


def _restretch_for_pem(data: bytes, passphrase: bytes, path: Path) -> bytes:
    """The PEM password for an existing private.pem, from its scrypt header line."""
    line = data.split(b"\n", 1)[0][len(_PEM_KDF_LABEL) :].decode("ascii", "replace")
    try:
        fields = dict(item.split("=", 1) for item in line.split())
        log2_n, r, p = int(fields["log2n"]), int(fields["r"]), int(fields["p"])
        salt = bytes.fromhex(fields["salt"])
    except (KeyError, ValueError) as exc:
        raise KeyFileError(f"{path} is corrupt: unreadable key-derivation line") from exc
    if not (10 <= log2_n <= 22 and 1 <= r <= 32 and 1 <= p <= 16 and len(salt) >= 8) or (
        128 * r * (1 << log2_n) > _SCRYPT_MAX_MEMORY
    ):
        raise KeyFileError(f"{path} is corrupt: implausible key-derivation parameters")
    return base64.urlsafe_b64encode(_derive_key(passphrase, salt, log2_n, r, p))


def seal_secret_key(fernet_key: bytes, passphrase: bytes) -> bytes:
    salt = secrets.token_bytes(16)
    nonce = secrets.token_bytes(12)
    header = _SEALED_HEADER.pack(
        _SEALED_MAGIC, _SEALED_VERSION, _SCRYPT_LOG2_N, _SCRYPT_R, _SCRYPT_P, salt, nonce
    )
    key = _derive_key(passphrase, salt, _SCRYPT_LOG2_N, _SCRYPT_R, _SCRYPT_P)
    return header + AESGCM(key).encrypt(nonce, fernet_key, header)


def _open_sealed_secret_key(path: Path, data: bytes, passphrase: bytes | None) -> bytes:
    if len(data) < _SEALED_HEADER.size + 16:
        raise KeyFileError(f"{path} is corrupt (truncated)")
    _magic, version, log2_n, r, p, salt, nonce = _SEALED_HEADER.unpack_from(data)
    if version != _SEALED_VERSION:
        raise KeyFileError(
            f"{path} has format version {version}; this peer_chat reads version {_SEALED_VERSION}"
        )
    if not (1 <= log2_n <= 30 and r >= 1 and 1 <= p <= 16) or (
        128 * r * (1 << log2_n) > _SCRYPT_MAX_MEMORY
    ):
        raise KeyFileError(f"{path} is corrupt (bad key-derivation parameters)")
    if passphrase is None:
        raise KeyFileError(
            f"{path} is protected by a passphrase: set {PASSPHRASE_ENV} or use a passphrase file"
        )
    header = data[: _SEALED_HEADER.size]
    key = _derive_key(passphrase, salt, log2_n, r, p)
    try:
        return AESGCM(key).decrypt(nonce, data[_SEALED_HEADER.size :], header)
    except InvalidTag as exc:
        raise KeyFileError(f"wrong passphrase for {path} (or the file is damaged)") from exc


# --------------------------------------------------------------------------- key manager


class KeyManager:
    """Loads or creates this peer's key files in `data_dir`."""

    def __init__(self, data_dir: Path, passphrase: bytes | None = None) -> None:
        self.data_dir = data_dir
        self._passphrase = passphrase

    @property
    def private_path(self) -> Path:
        return self.data_dir / PRIVATE_KEY_FILE

    @property
    def public_path(self) -> Path:
        return self.data_dir / PUBLIC_KEY_FILE

    @property
    def secret_path(self) -> Path:
        return self.data_dir / SECRET_KEY_FILE

    def _ensure_dir(self) -> None:
        try:
            warning = make_private_dir(self.data_dir)
        except OSError as exc:
            raise KeyFileError(
                f"cannot create data directory {self.data_dir}: {_reason(exc)}"
            ) from exc
        if warning is not None:
            logger.warning("%s", warning)

    # ---- identity

    def load_or_create_identity(self) -> Identity:
        self._ensure_dir()
        path = self.private_path
        if not path.exists():
            self._create_private_key()
        private_key = self._load_private_key()
        identity = Identity.from_private_key(private_key)
        self._sync_public_pem(identity)
        return identity

    def _create_private_key(self) -> None:
        path = self.private_path
        key = rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=NEW_KEY_BITS)
        encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
        header = b""
        if self._passphrase:
            header, password = _stretch_for_pem(self._passphrase)
            encryption = serialization.BestAvailableEncryption(password)
        pem = header + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        try:
            created = _create_file_exclusive(path, pem)
        except OSError as exc:
            raise KeyFileError(f"cannot write {path}: {_reason(exc)}") from exc
        if created:
            _check_private_mode(path, fix=False)
            logger.info("created a new %d-bit identity key in %s", NEW_KEY_BITS, path)

    def _load_private_key(self) -> RSAPrivateKey:
        path = self.private_path
        data = _read_key_file(path)
        _check_private_mode(path, fix=True)
        encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data
        password = self._passphrase if encrypted else None
        if password is not None and data.startswith(_PEM_KDF_LABEL):
            password = _restretch_for_pem(data, password, path)
        if encrypted and password is None:
            raise KeyFileError(
                f"{path} is protected by a passphrase: set {PASSPHRASE_ENV} "
                "or use a passphrase file"
            )
        if not encrypted and self._passphrase is not None:
            logger.warning("%s is not encrypted; the passphrase is not used for it", path)
        try:
            # Validation of the primes costs ~90 ms at every start; the sign/verify
            # self-test below catches a damaged key for ~2 ms instead.
            key = serialization.load_pem_private_key(
                data, password=password, unsafe_skip_rsa_key_validation=True
            )
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            if encrypted:
                raise KeyFileError(f"wrong passphrase for {path} (or the file is damaged)") from exc
            raise KeyFileError(f"{path} is corrupt: not a PEM private key") from exc
        if not isinstance(key, RSAPrivateKey):
            raise KeyFileError(f"{path} holds a non-RSA key; peer_chat needs an RSA key")
        problem = identity_key_problem(key.public_key())
        if problem is not None:  # before the self-test: it would cost seconds for a huge key
            raise KeyFileError(f"{path} holds an unusable key: {problem}")
        try:
            signature = key.sign(_SELF_TEST_DATA, _PSS, _SHA256)
            key.public_key().verify(signature, _SELF_TEST_DATA, _PSS, _SHA256)
        except (InvalidSignature, ValueError) as exc:
            raise KeyFileError(f"{path} is corrupt: the key fails its self-test") from exc
        return key

    def _sync_public_pem(self, identity: Identity) -> None:
        """public.pem is derived: (re)write it when missing or not matching private.pem."""
        path = self.public_path
        pem = identity.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        try:
            current = path.read_bytes() if path.exists() else None
        except OSError:
            current = b""
        if current is not None:
            if current == pem or self._pem_matches(current, identity.public_der):
                return
            logger.warning(
                "%s does not match %s; rewriting it (old copy kept as %s.bak)",
                path,
                PRIVATE_KEY_FILE,
                PUBLIC_KEY_FILE,
            )
            with contextlib.suppress(OSError):
                write_file_atomic(path.with_name(PUBLIC_KEY_FILE + ".bak"), current, 0o644)
        try:
            write_file_atomic(path, pem, 0o644)
        except OSError as exc:
            raise KeyFileError(f"cannot write {path}: {_reason(exc)}") from exc

    @staticmethod
    def _pem_matches(data: bytes, public_der: bytes) -> bool:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            return False
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return der == public_der

    # ---- secret.key

    def load_or_create_sealer(self) -> Sealer:
        self._ensure_dir()
        path = self.secret_path
        if not path.exists():
            fernet_key = Fernet.generate_key()
            data = seal_secret_key(fernet_key, self._passphrase) if self._passphrase else fernet_key
            try:
                created = _create_file_exclusive(path, data)
            except OSError as exc:
                raise KeyFileError(f"cannot write {path}: {_reason(exc)}") from exc
            if created:
                _check_private_mode(path, fix=False)
                return Sealer(fernet_key)
        data = _read_key_file(path)
        _check_private_mode(path, fix=True)
        if data.startswith(_SEALED_MAGIC):
            fernet_key = _open_sealed_secret_key(path, data, self._passphrase)
        else:
            if self._passphrase is not None:
                logger.warning("%s is not encrypted; the passphrase is not used for it", path)
            fernet_key = data.strip()
        try:
            return Sealer(fernet_key)
        except (ValueError, binascii.Error) as exc:
            raise KeyFileError(f"{path} is corrupt: not a Fernet key") from exc

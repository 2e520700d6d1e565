"""Offered file names made safe to create in the downloads folder (pure).

A name in an offer is chosen by the sender, who may be hostile. What is kept
of it is one plain file name: the last path component (either separator
style), without control, format or unassigned characters, without characters
Windows refuses (`<>:"/\\|?*`), without leading dots or spaces (no hidden files,
no `.` or `..`), without trailing dots or spaces (Windows drops them), never a
Windows device name (`CON`, `NUL`, `COM1`, ...), and at most
MAX_SAVED_NAME_BYTES of UTF-8 with its extension kept where possible. The
result is never empty, so joining it to a folder names a file directly in that
folder; the file store still resolves and checks every path it writes.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from peerchat.limits import MAX_SAVED_NAME_BYTES

FALLBACK_NAME: Final = "file"
MAX_EXTENSION_CHARS: Final = 16
_SEPARATORS: Final = re.compile(r"[/\\]")
_WINDOWS_FORBIDDEN: Final = frozenset('<>:"|?*')
# Control, format (bidi overrides, zero-width), surrogates, private use, unassigned,
# line and paragraph separators: none of them belongs in a file name.
_DROPPED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_DEVICE_NAMES: Final = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "CLOCK$"}
    | {f"{port}{digit}" for port in ("COM", "LPT") for digit in "0123456789\u00b9\u00b2\u00b3"}
)
_EDGE: Final = ". "


def _plain_characters(text: str) -> str:
    out = []
    for char in text:
        category = unicodedata.category(char)
        if category in _DROPPED_CATEGORIES:
            continue
        if char in _WINDOWS_FORBIDDEN:
            out.append("_")
        elif category == "Zs":
            out.append(" ")  # no-break and other odd spaces look like a space anyway
        else:
            out.append(char)
    return "".join(out)


def _cut(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` whose UTF-8 fits in `max_bytes` (whole characters)."""
    raw = text.encode()
    if len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode(errors="ignore")


def _split_extension(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    if dot <= 0 or len(name) - dot - 1 > MAX_EXTENSION_CHARS or dot == len(name) - 1:
        return name, ""
    return name[:dot], name[dot:]


def _fit(name: str) -> str:
    if len(name.encode()) <= MAX_SAVED_NAME_BYTES:
        return name
    stem, extension = _split_extension(name)
    stem = _cut(stem, MAX_SAVED_NAME_BYTES - len(extension.encode())).rstrip(_EDGE)
    return stem + extension if stem else _cut(name, MAX_SAVED_NAME_BYTES).rstrip(_EDGE)


def _is_device_name(name: str) -> bool:
    return name.split(".", 1)[0].rstrip(" ").upper() in _DEVICE_NAMES


def safe_file_name(offered: str) -> str:
    """A file name that is safe to create directly inside a folder, derived from `offered`."""
    text = unicodedata.normalize("NFC", offered)
    parts = [part for part in _SEPARATORS.split(text) if part.strip(_EDGE)]
    # Dropping characters can bring a combining mark next to a new base: compose again.
    name = unicodedata.normalize("NFC", _plain_characters(parts[-1] if parts else ""))
    name = name.strip(_EDGE)
    if name and _is_device_name(name):
        name = "_" + name
    name = _fit(name)
    return name or FALLBACK_NAME


def numbered_name(name: str, number: int) -> str:
    """`report.pdf` as the `number`th alternative: `report (1).pdf`; itself for 0."""
    if number == 0:
        return name
    stem, extension = _split_extension(name)
    return f"{stem} ({number}){extension}"

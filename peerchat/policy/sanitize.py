"""Make remote text safe to print, and check peer names (pure).

Everything a peer sends (names, messages, reasons) is printed into the user's
terminal. A control character there is an instruction to the terminal, not
text: ESC/CSI sequences clear the screen, move the cursor, set the window
title; CR and backspace overwrite what was printed; a newline lets a message
forge a whole line of the program's own output; bidi controls reorder what is
shown. `display_safe` turns each such character into a visible escape, so the
hostile text stays readable and the output is always a single line.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from peerchat.limits import MAX_NAME_CHARS

# Line breaks and tabs get a space before their marker so the words around them stay apart.
_SPACED_MARKERS = {
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\f": "\\f",
    "\x85": "\\x85",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}

# Format characters that only join glyphs (emoji sequences, Indic and Persian
# scripts) and cannot move the cursor or reorder text.
_ALLOWED_FORMAT = frozenset({"\u200c", "\u200d"})

# Cc: C0, DEL, C1. Cf: bidi embeddings, overrides, isolates and marks, invisible
# formatting. Cs: lone surrogates (unprintable, would crash the encoder). Zl/Zp: line breaks.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})

_NAME_PUNCTUATION = frozenset(" ._-")

# Letters and symbols that show as an empty cell: the Hangul fillers and the Braille blank.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
_LONG_SPACES: Final = re.compile(" {4,}")
_LONG_SPACES_OR_BLANKS: Final = re.compile(" {4,}|[\u115f\u1160\u3164\uffa0\u2800]")

# Default_Ignorable_Code_Point (Unicode's DerivedCoreProperties.txt, 15.1 to 17.0): code
# points that show as nothing when a font has no glyph for them. Some are letters
# (the Hangul fillers) or marks (variation selectors), which a name would otherwise
# accept: "Alice" + U+3164 looks exactly like "Alice".
_DEFAULT_IGNORABLE: tuple[tuple[int, int], ...] = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)


_DEFAULT_IGNORABLE_RE: Final = re.compile(
    "[" + "".join(f"{chr(low)}-{chr(high)}" for low, high in _DEFAULT_IGNORABLE) + "]"
)


def is_default_ignorable(char: str) -> bool:
    """True for a Default_Ignorable_Code_Point: invisible wherever a font lacks a glyph."""
    return _DEFAULT_IGNORABLE_RE.fullmatch(char) is not None


def drop_default_ignorable(text: str) -> str:
    """`text` without its Default_Ignorable_Code_Points."""
    return _DEFAULT_IGNORABLE_RE.sub("", text)


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _is_unsafe(char: str) -> bool:
    category = unicodedata.category(char)
    if category in _ESCAPED_CATEGORIES:
        return char not in _ALLOWED_FORMAT
    # A space other than the ASCII one, or a letter that shows as a blank, would look
    # like ordinary spacing: shown by its code so that it cannot pad a line unseen.
    return (category == "Zs" and char != " ") or char in _BLANK_LETTERS


def display_safe(text: str) -> str:
    """`text` as one line, safe to print and not able to pass for the program's output.

    Every control, format and line-break character is escaped, and so is every
    space but the ASCII one; a run of more than three spaces is shown as its
    count, so that padding cannot push text to where a line of its own would be.
    """
    # isprintable() is False for every category escaped here (Zs but " " included),
    # so most text returns at once.
    if text.isprintable() and _LONG_SPACES_OR_BLANKS.search(text) is None:
        return text
    parts: list[str] = []
    for char in text:
        marker = _SPACED_MARKERS.get(char)
        if marker is not None:
            parts.append(" " + marker)
        elif _is_unsafe(char):
            parts.append(_escape(char))
        else:
            parts.append(char)
    return _LONG_SPACES.sub(_count_spaces, "".join(parts))


def _count_spaces(run: re.Match[str]) -> str:
    return f" [{len(run[0])} spaces] "


# -- rows on a terminal ----------------------------------------------------------------------

CONTINUATION: Final = "  | "  # starts every row after the first of one printed line


def _cells(char: str) -> int:
    """Terminal cells `char` takes: 0 for a combining mark or joiner, 2 for a wide one."""
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def fit_rows(line: str, columns: int) -> str:
    """`line` cut into rows that fit a terminal `columns` wide, the later ones marked.

    A terminal cuts a long line wherever the width falls, so a message of the
    right length could start a row with text that looks like a line of the
    program's own. Cut here instead, every row after the first starting with
    CONTINUATION, the last column left free (a terminal that wraps one cell
    early, or counts one character wider, still shows these rows as they are).
    """
    limit = max(columns - 1, len(CONTINUATION) + 8)
    rows: list[str] = []
    row: list[str] = []
    used = 0
    for char in line:
        cells = _cells(char)
        if used + cells > limit:
            rows.append("".join(row))
            row, used = [CONTINUATION], len(CONTINUATION)
        row.append(char)
        used += cells
    rows.append("".join(row))
    return "\n".join(rows)


def _name_char_ok(char: str, previous: str | None) -> bool:
    if char in _NAME_PUNCTUATION:
        return True
    category = unicodedata.category(char)
    if category[0] == "L" or category == "Nd":
        return True
    # Combining marks (accents in decomposed form, vowel signs) only right after a letter.
    return (
        category in ("Mn", "Mc")
        and previous is not None
        and unicodedata.category(previous)[0] in ("L", "M")
    )


def validate_name(name: str) -> str:
    """Return `name` unchanged if it is a valid peer name, else raise ValueError saying why.

    A name has 1..MAX_NAME_CHARS characters, no leading or trailing space, and
    only letters, digits (any script), spaces, '.', '_' and '-'; never an
    invisible one (a Default_Ignorable_Code_Point), even a letter or a mark.
    """
    if not name:
        raise ValueError("name must not be empty")
    if len(name) > MAX_NAME_CHARS:
        raise ValueError(f"name is {len(name)} characters long; at most {MAX_NAME_CHARS} allowed")
    if name[0] == " " or name[-1] == " ":
        raise ValueError("name must not start or end with a space")
    previous: str | None = None
    for position, char in enumerate(name, start=1):
        if not _name_char_ok(char, previous):
            # A lone combining mark would fuse with the text around it: show its code.
            visible = char.isprintable() and unicodedata.category(char)[0] != "M"
            shown = char if visible else _escape(char)
            raise ValueError(
                f"name may contain only letters, digits, spaces, '.', '_' and '-' "
                f"(character {position}, {shown}, is not allowed)"
            )
        if is_default_ignorable(char):  # a filler letter or an invisible mark
            raise ValueError(
                f"name may not contain invisible characters "
                f"(character {position}, {_escape(char)}, is one)"
            )
        previous = char
    return name

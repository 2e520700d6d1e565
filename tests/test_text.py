from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerchat.limits import MAX_NAME_CHARS
from peerchat.text import display_safe, validate_name

BIDI_CONTROLS = frozenset(
    [chr(c) for c in range(0x202A, 0x202F)]
    + [chr(c) for c in range(0x2066, 0x206A)]
    + ["\u200e", "\u200f", "\u061c"]
)

# Any character, lone surrogates included (text decoded with errors="surrogateescape").
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=200)


def assert_one_safe_line(shown: str) -> None:
    categories = {unicodedata.category(c) for c in shown}
    assert not categories & {"Cc", "Cs", "Zl", "Zp"}, ascii(shown)
    assert not set(shown) & BIDI_CONTROLS, ascii(shown)
    assert len(shown.splitlines()) <= 1, ascii(shown)
    shown.encode("utf-8")  # printable on a UTF-8 terminal without an error


@pytest.mark.parametrize(
    ("hostile", "visible"),
    [
        ("\x1b[2J", "\\x1b[2J"),  # clear screen
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),  # set window title, BEL-terminated
        ("\x1b[10A\x1b[2K", "\\x1b[10A\\x1b[2K"),  # cursor up, erase line
        ("\x1b[H\x1b[5;10H", "\\x1b[H\\x1b[5;10H"),  # cursor positioning
        ("\x9b2J", "\\x9b2J"),  # C1 CSI
        ("\x9d0;t\x9c", "\\x9d0;t\\x9c"),  # C1 OSC ... ST
        ("evil\u202etxt.exe", "evil\\u202etxt.exe"),  # right-to-left override
        ("a\u2066b\u2069c", "a\\u2066b\\u2069c"),  # isolates
        ("\u202a\u202b\u202c\u202d", "\\u202a\\u202b\\u202c\\u202d"),
        ("nul\x00byte", "nul\\x00byte"),
        ("bell\x07", "bell\\x07"),
        ("abc\x08\x08\x08xyz", "abc\\x08\\x08\\x08xyz"),  # backspace over text
        ("del\x7f", "del\\x7f"),
        ("zero\u200bwidth", "zero\\u200bwidth"),  # invisible format character
        ("tag\U000e0041", "tag\\U000e0041"),  # invisible tag character (astral Cf)
    ],
)
def test_control_sequences_are_shown_escaped(hostile: str, visible: str) -> None:
    shown = display_safe(f"hi {hostile} there")

    assert shown == f"hi {visible} there"
    assert_one_safe_line(shown)


@pytest.mark.parametrize("brk", ["\n", "\r", "\r\n", "\v", "\f", "\x85", "\u2028", "\u2029"])
def test_a_message_cannot_fake_a_program_line(brk: str) -> None:
    forged = f"hi{brk}Received from 1.2.3.4:5 (Bob): hi"

    line = f"Received from 10.0.0.5:5000 (Alice): {display_safe(forged)}"

    assert_one_safe_line(line)
    assert len(line.splitlines()) == 1
    assert "Received from 1.2.3.4:5 (Bob): hi" in line  # still readable, just not a line


def test_newline_and_tab_become_space_and_marker() -> None:
    assert display_safe("one\ntwo") == "one \\ntwo"
    assert display_safe("a\tb") == "a \\tb"
    assert display_safe("carriage\rreturn") == "carriage \\rreturn"
    assert display_safe("\r\n") == " \\r \\n"


def test_ordinary_text_is_unchanged() -> None:
    for text in [
        "hello, world!",
        "Zoë says 👋 — ça va?",
        "日本語のテキスト",
        "שלום עולם",  # right-to-left letters are text, not controls
        "مرحبا",
        "family 👨\u200d👩\u200d👧 emoji",  # zero-width joiners keep emoji whole
        "back\\slash and \\x1b typed literally",
        "",
    ]:
        assert display_safe(text) == text


def test_lone_surrogate_is_escaped() -> None:
    shown = display_safe("bad \udcff byte")
    assert shown == "bad \\udcff byte"
    assert_one_safe_line(shown)


@given(ANY_TEXT)
def test_any_text_becomes_one_safe_line(text: str) -> None:
    shown = display_safe(text)

    assert_one_safe_line(shown)
    assert display_safe(shown) == shown  # already safe: nothing left to escape


@given(ANY_TEXT)
def test_nothing_hostile_is_dropped(text: str) -> None:
    shown = display_safe(text)

    assert shown.count("\\x1b") >= text.count("\x1b")
    assert shown.count("\\u202e") >= text.count("\u202e")
    assert shown.count("\\n") >= text.count("\n")
    blank = any(c in "\u115f\u1160\u3164\uffa0\u2800" for c in text)
    if text.isprintable() and "    " not in text and not blank:
        assert shown == text


@pytest.mark.parametrize(
    "name",
    [
        "Alice",
        "B",
        "bob-2",
        "team_7.alpha",
        "Mary Ann",
        "Zoë",
        "Jürgen Müller",
        "e\u0301lise",  # decomposed accent: letter + combining mark
        "李雷",
        "Ωμέγα",
        "محمد",
        "हिन्दी",
        "٣٤",  # Arabic-Indic digits
        "x" * MAX_NAME_CHARS,
    ],
)
def test_valid_names_are_returned_unchanged(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "^name must not be empty$"),
        ("x" * (MAX_NAME_CHARS + 1), f"at most {MAX_NAME_CHARS}"),
        (" Bob", "^name must not start or end with a space$"),
        ("Bob ", "^name must not start or end with a space$"),
        ("Bob\n", "only letters"),
        ("Bob\nReceived from", "only letters"),
        ("Bob\x1b[2J", "only letters"),
        ("Bob\u202e", "only letters"),
        ("Bob\u200b", "only letters"),
        ("Bob!", "only letters"),
        ("a/b", "only letters"),
        ("a\u00a0b", "only letters"),  # no-break space looks like a space but is not one
        ("a\tb", "only letters"),
        ("\u0301a", "only letters"),  # a name cannot start with a combining mark
        ("Bob\x00", "only letters"),
    ],
)
def test_invalid_names_give_the_reason(name: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as info:
        validate_name(name)
    assert_one_safe_line(str(info.value))  # the reason itself is safe to print


def test_invalid_character_is_named_by_position() -> None:
    with pytest.raises(ValueError, match=r"character 4, \\x1b,"):
        validate_name("Bob\x1b[2J")


NAME_LIKE = st.text(
    st.characters(categories=["L", "M", "Nd", "No", "Zs", "Cc", "Cf", "P"]),
    max_size=MAX_NAME_CHARS + 2,
)


@given(st.one_of(NAME_LIKE, ANY_TEXT))
def test_a_valid_name_is_always_display_safe(text: str) -> None:
    try:
        name = validate_name(text)
    except ValueError:
        return
    assert name == text
    assert 1 <= len(name) <= MAX_NAME_CHARS
    assert display_safe(name) == name


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("a/b", "character 2, /,"),  # printable: shown as it is
        ("\u0301a", "character 1, \\u0301,"),  # a lone combining mark would fuse: its code
        ("a\u200bb", "character 2, \\u200b,"),  # invisible
        ("a\uffffb", "character 2, \\uffff,"),  # the largest code shown with \\u
        ("a\U000e0001b", "character 2, \\U000e0001,"),  # beyond: \\U and eight digits
        ("a\x7fb", "character 2, \\x7f,"),
    ],
)
def test_an_invalid_character_is_shown_so_the_user_can_find_it(name: str, shown: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_name(name)
    assert f"({shown} is not allowed)" in str(info.value)


def test_combining_marks_may_follow_one_another_after_a_letter() -> None:
    """Vietnamese and Indic names stack marks: e + circumflex + dot below."""
    assert validate_name("Nguye\u0302\u0323n") == "Nguye\u0302\u0323n"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a   b", "a   b"),  # three spaces: as they are
        ("a    b", "a [4 spaces] b"),  # printable, but padding: counted
        ("Alice\u3164", "Alice\\u3164"),  # printable, but a blank letter: escaped
    ],
)
def test_printable_text_with_padding_or_a_blank_letter_is_still_made_safe(
    text: str, shown: str
) -> None:
    assert display_safe(text) == shown


def test_an_invisible_letter_in_a_name_is_named_with_its_position_and_code() -> None:
    with pytest.raises(ValueError) as info:
        validate_name("Alice\u3164")
    assert str(info.value) == (
        "name may not contain invisible characters (character 6, \\u3164, is one)"
    )

"""Offered file names made safe: whatever a sender calls its file, it lands in the folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from peerchat.limits import MAX_SAVED_NAME_BYTES
from peerchat.policy.filenames import FALLBACK_NAME, numbered_name, safe_file_name


@pytest.mark.parametrize(
    ("offered", "saved"),
    [
        ("report.pdf", "report.pdf"),
        ("rapport d'été.pdf", "rapport d'été.pdf"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\Windows\\system.ini", "system.ini"),
        ("/absolute/path/x.txt", "x.txt"),
        ("C:\\Users\\me\\x.txt", "x.txt"),
        ("dir/", "dir"),
        ("..", FALLBACK_NAME),
        (".", FALLBACK_NAME),
        ("", FALLBACK_NAME),
        ("/", FALLBACK_NAME),
        (".bashrc", "bashrc"),
        ("...hidden", "hidden"),
        (" spaced ", "spaced"),
        ("trailing.", "trailing"),
        ("bell\x07and\x00nul\nline.txt", "bellandnulline.txt"),
        ("evil\u202egnp.exe", "evilgnp.exe"),  # a right-to-left override hides the extension
        ("zero\u200bwidth.txt", "zerowidth.txt"),
        ('a<b>c:d"e|f?g*h.txt', "a_b_c_d_e_f_g_h.txt"),
        ("CON", "_CON"),
        ("con.txt", "_con.txt"),
        ("Lpt1.tar.gz", "_Lpt1.tar.gz"),
        ("COM\u00b9", "_COM\u00b9"),
        ("CONSOLE.txt", "CONSOLE.txt"),
        ("nul .txt", "_nul .txt"),
        ("e\u0301.txt", "\u00e9.txt"),  # NFC
        ("no\u00a0break.txt", "no break.txt"),
    ],
)
def test_names_are_made_safe(offered: str, saved: str) -> None:
    assert safe_file_name(offered) == saved


def test_long_names_are_cut_keeping_the_extension() -> None:
    saved = safe_file_name("x" * 1000 + ".pdf")
    assert saved.endswith(".pdf")
    assert len(saved.encode()) == MAX_SAVED_NAME_BYTES
    wide = safe_file_name("字" * 400 + ".tar")  # 3 bytes each: cut on a character boundary
    assert wide.endswith(".tar")
    assert len(wide.encode()) <= MAX_SAVED_NAME_BYTES
    assert safe_file_name("x" * 1000) == "x" * MAX_SAVED_NAME_BYTES


def test_numbered_alternatives() -> None:
    assert numbered_name("report.pdf", 0) == "report.pdf"
    assert numbered_name("report.pdf", 1) == "report (1).pdf"
    assert numbered_name("README", 12) == "README (12)"
    assert numbered_name("archive.tar.gz", 2) == "archive.tar (2).gz"
    assert numbered_name("x." + "y" * 40, 1) == "x." + "y" * 40 + " (1)"  # not an extension


def _check_safe(name: str, folder: Path, max_bytes: int = MAX_SAVED_NAME_BYTES) -> None:
    assert name
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith((".", " ")) and not name.endswith((".", " "))
    assert len(name.encode()) <= max_bytes
    assert all(ord(c) >= 0x20 for c in name)
    target = folder / name
    assert target.parent == folder
    assert target.resolve().parent == folder.resolve()
    assert os.path.normpath(target) == str(target)  # nothing like "..", "." or "a//b" inside


names = st.one_of(
    st.text(max_size=300),
    st.lists(
        st.sampled_from(["..", ".", "/", "\\", "a", "é", "\x00", "\u202e", " ", "CON", ".txt"]),
        max_size=40,
    ).map("".join),
)


@settings(max_examples=600)
@given(names)
@example("../" * 50 + "x")
@example("\\..\\..\\..")
@example("." * 300)
@example(" ." * 150)
def test_no_name_ever_escapes_the_folder(offered: str) -> None:
    folder = Path("/srv/downloads")
    saved = safe_file_name(offered)
    _check_safe(saved, folder)
    for number in (1, 9999):
        _check_safe(numbered_name(saved, number), folder, MAX_SAVED_NAME_BYTES + len(" (9999)"))
    assert safe_file_name(saved) == saved  # safe names stay as they are


@settings(max_examples=200)
@given(names)
def test_a_safe_name_is_created_directly_in_a_real_folder(offered: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "downloads"
        folder.mkdir()
        saved = safe_file_name(offered)
        fd = os.open(folder / saved, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.close(fd)
        assert os.listdir(folder) == [saved]
        assert os.listdir(tmp) == ["downloads"]

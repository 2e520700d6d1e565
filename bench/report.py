"""Print a results file as the Markdown table the README shows.

python -m bench.report [bench/results/latest.json]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from bench.harness import format_markdown

LATEST = Path(__file__).resolve().parent / "results" / "latest.json"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", type=Path, default=LATEST)
    args = parser.parse_args(argv)
    document = json.loads(args.results.read_text(encoding="utf-8"))
    print(format_markdown(document["rows"], document["machine"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

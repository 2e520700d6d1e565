"""The first history query of a fresh process: `history_query.py DATA_DIR PEER_FP LIMIT`.

Opens DATA_DIR/chat_history.db with the sealer in DATA_DIR, as a peer does at
start, then times the first `history(PEER_FP, LIMIT)`. Prints one line of
JSON: seconds to open, seconds of the first query, rows returned.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from crypto_utils import KeyManager
from storage import HistoryStore


def main(data_dir: Path, peer_fp: str, limit: int) -> None:
    started = time.perf_counter()
    sealer = KeyManager(data_dir).load_or_create_sealer()
    with HistoryStore.open(data_dir / "chat_history.db", sealer) as store:
        opened = time.perf_counter()
        rows = store.history(peer_fp, limit=limit)
        queried = time.perf_counter()
    result = {"open_s": opened - started, "query_s": queried - opened, "rows": len(rows)}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))

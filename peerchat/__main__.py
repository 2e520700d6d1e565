"""`python -m peerchat`: start a peer, exactly as `python peer_chat.py` does."""

import sys

from peer_chat import main

sys.exit(main())

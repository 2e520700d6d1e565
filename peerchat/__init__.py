"""peer_chat: serverless, end-to-end encrypted chat for people on the same network.

The program lives in this package; `peer_chat.py` (flags and start-up),
`crypto_utils.py`, `discovery.py` and `storage.py` stay beside it as the
project's named entry points. See docs/ARCHITECTURE.md for the rooms.
"""

__version__ = "1.0.0"

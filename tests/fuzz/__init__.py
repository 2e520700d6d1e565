"""Coverage-guided fuzz targets (atheris); `python -m tests.fuzz` runs them.

Importing this package imports nothing of peer_chat, so the runner can import
the targets (and with them the code under test) with instrumentation on.
"""

NAMES = (
    "frame_decoder",
    "message_decoder",
    "hello_payload",
    "beacon",
    "established_channel",
    "node_messages",
)

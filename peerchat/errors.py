"""Error types shared by every layer.

Two families: `ProtocolError` is what a remote peer can cause (bad bytes,
failed authentication); it closes one connection and nothing else.
`PeerChatError` is what the local user can cause or needs to act on (a bad
flag, a port in use, a corrupt file); its message is one clear line that the
CLI prints before exiting with `exit_code`.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """The peer broke the protocol; the only error the pure protocol layers raise."""


class PeerChatError(Exception):
    """A problem the user must see as one clear line, never as a traceback."""

    exit_code = 1


class UsageError(PeerChatError):
    """A wrong command-line value."""

    exit_code = 2


class KeyFileError(PeerChatError):
    """A key file is missing, corrupt, or its passphrase is wrong."""


class StorageError(PeerChatError):
    """The history database cannot be opened, read or written."""


class BindError(PeerChatError):
    """A listening socket cannot be opened (for example, the port is in use)."""


class NotAnswering(PeerChatError):
    """The network thread did not answer a call from the menu in time."""

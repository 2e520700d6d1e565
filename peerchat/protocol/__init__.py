"""The wire protocol, pure: bytes and time in, bytes and events out; no sockets, no threads."""

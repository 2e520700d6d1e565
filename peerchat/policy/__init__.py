"""Pure policy: decisions over plain data with time passed in; no sockets, no threads."""

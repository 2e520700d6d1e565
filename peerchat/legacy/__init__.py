"""The legacy bridge, pure: the formats of the original program and its neighbours.

These peers speak plain text (or text under one shared Fernet key) over one
TCP connection per message, on a port of their own (`--legacy-port`), never on
the secure port. Nothing they send is authenticated: an address, a team name
or a message from them is a claim that anyone on the network could have made.
The I/O roles that use this package live in `peerchat.net.legacy_*`.
"""

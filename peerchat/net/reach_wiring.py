"""Reach wired to the peers' sessions: peer exchange in, sessions' news, how a peer is announced.

`Reach` answers each of these on its own; this part says which extension
point of the session owner each answer goes to, so the node shell only asks
reach to attach.
"""

from __future__ import annotations

from peerchat.net.reach import Reach
from peerchat.net.session_hooks import SessionHooks
from peerchat.protocol.messages import PeerExchange


def attach_reach(reach: Reach, hooks: SessionHooks) -> None:
    hooks.route([PeerExchange], reach.exchange_received)
    hooks.on_session_up(reach.session_up)
    hooks.on_session_down(reach.session_down)
    # A peer that reach found is announced as discovered; others as without reach.
    hooks.announce_with(reach.announcement)

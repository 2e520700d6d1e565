"""The node's news on its way to the user interface.

News from start-up (a beacon can arrive while the ports are bound) is held
until `release()`, so nothing is shown before the banner. The same local
trouble (a full disk) recurs with every retry: a Problem line is said at most
once per PROBLEM_REPEAT seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from peerchat.events import Problem, UiEvent

log = logging.getLogger(__name__)

PROBLEM_REPEAT = 30.0  # seconds before the same problem line is shown again
_PROBLEMS_REMEMBERED = 256


class News:
    def __init__(self, show: Callable[[UiEvent], None], clock: Callable[[], float]) -> None:
        self._show_to_ui = show
        self._clock = clock
        self._held: list[UiEvent] | None = []
        self._problems_said: dict[str, float] = {}

    def emit(self, event: UiEvent) -> None:
        if isinstance(event, Problem):
            now = self._clock()
            if now - self._problems_said.get(event.text, -PROBLEM_REPEAT) < PROBLEM_REPEAT:
                return
            if len(self._problems_said) > _PROBLEMS_REMEMBERED:
                self._problems_said.clear()
            self._problems_said[event.text] = now
        if self._held is not None:
            self._held.append(event)
            return
        self._show(event)

    def problem(self, text: str) -> None:
        self.emit(Problem(text))

    def release(self) -> None:
        """Show what was held, and from now on show news as it comes."""
        held, self._held = self._held or [], None
        for event in held:
            self._show(event)

    def _show(self, event: UiEvent) -> None:
        try:
            self._show_to_ui(event)
        except Exception:
            log.exception("user interface callback failed")

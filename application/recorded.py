"""In-process wake-ups: an application that tells registered callbacks it recorded events.

`webround serve` runs the API, the dispatcher and the workers in one process; a command
recorded by the API (or an attempt recorded by a worker) can wake the dispatcher at once
instead of waiting for its next poll. Across processes PostgreSQL's NOTIFY does the same
(infrastructure/wakeup.py). Callbacks must be cheap and must not raise (setting an
`threading.Event` is the intended use); they run after the commit, in the saving thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class NotifiesOnRecord:
    """Mixin for an eventsourcing `Application` (list it first among the bases)."""

    _on_recorded: tuple[Callable[[], None], ...] = ()

    def on_recorded(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` after every save; returns the function that stops it."""
        self._on_recorded = (*self._on_recorded, callback)

        def cancel() -> None:
            self._on_recorded = tuple(c for c in self._on_recorded if c is not callback)

        return cancel

    def _notify(self, recordings: list[Any]) -> None:
        super()._notify(recordings)  # type: ignore[misc]
        for callback in self._on_recorded:
            callback()

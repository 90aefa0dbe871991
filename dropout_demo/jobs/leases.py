"""Leases: which owners (browser identities) are still around, and grace for those who left.

An owner is one person's identity (kept in a cookie, so it survives a reload); it may have
several live browser sessions (tabs, a reload's new session before the old one is closed). The
owner is gone only when its last session has closed and a grace period has passed without it
coming back. Plain data with an injectable clock, so tests never wait on the wall clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Leases:
    """Not thread-safe: the manager calls it under its lock."""

    def __init__(self, grace: float, clock: Callable[[], float] = time.monotonic):
        self.grace = grace
        self.clock = clock
        self._sessions: dict[str, set[str]] = {}  # owner -> live session ids
        self._deadlines: dict[str, float] = {}  # owner -> end of its grace period

    def touch(self, owner: str, session: str | None = None) -> bool:
        """``owner`` is here (from ``session`` when given); True if a pending grace ended."""
        if session is not None:
            self._sessions.setdefault(owner, set()).add(session)
        return self._deadlines.pop(owner, None) is not None

    def close(self, owner: str, session: str | None = None) -> None:
        """A session of ``owner`` has gone; its grace starts once no session is left."""
        sessions = self._sessions.get(owner)
        if sessions is not None and session is not None:
            sessions.discard(session)
        if session is None or not sessions:
            self._sessions.pop(owner, None)
            self._deadlines.setdefault(owner, self.clock() + self.grace)

    def pending(self, owner: str) -> bool:
        return owner in self._deadlines

    def next_deadline(self) -> float | None:
        return min(self._deadlines.values(), default=None)

    def due(self, now: float | None = None) -> list[str]:
        """Owners whose grace has run out; they are forgotten here."""
        now = self.clock() if now is None else now
        gone = [owner for owner, due in self._deadlines.items() if due <= now]
        for owner in gone:
            del self._deadlines[owner]
        return gone

    def forget(self, owner: str) -> None:
        self._sessions.pop(owner, None)
        self._deadlines.pop(owner, None)

    def clear(self) -> None:
        self._sessions.clear()
        self._deadlines.clear()

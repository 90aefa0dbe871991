"""Scheduling: a queue that is fair between sessions, the running cap, and dispatch.

:class:`FairQueue` is a plain data structure: sessions with waiting runs take turns (round
robin); at its turn a session gets the waiting run that the most sessions wait for, else its
oldest; a run several sessions wait for is served at the turn of whichever of them comes
first. :class:`Scheduler` adds the running cap and hands runs to an executor; the manager
calls it under its lock. A priority run (the Draw page's default model, which a first visitor
waits for) skips the fair queue and starts in a slot of its own above the cap.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


class FairQueue(Generic[T]):
    """Round robin over owners; FIFO within an owner. Not thread-safe (callers lock)."""

    def __init__(self) -> None:
        self._by_owner: dict[str, collections.deque[T]] = {}
        self._owners: dict[T, list[str]] = {}  # item -> owners waiting for it, in join order
        self._turns: collections.deque[str] = collections.deque()  # owners with items
        self._order: list[T] | None = None  # cached dispatch order, dropped on any change

    def __len__(self) -> int:
        return len(self._owners)

    def __contains__(self, item: object) -> bool:
        return item in self._owners

    def __iter__(self):
        return iter(self.order())

    def push(self, item: T, owner: str) -> None:
        """``owner`` waits for ``item`` (a new item, or one others already wait for)."""
        owners = self._owners.setdefault(item, [])
        if owner in owners:
            return
        owners.append(owner)
        queue = self._by_owner.get(owner)
        if queue is None:
            queue = self._by_owner[owner] = collections.deque()
            self._turns.append(owner)
        queue.append(item)
        self._order = None

    def discard_owner(self, item: T, owner: str) -> bool:
        """``owner`` no longer waits for ``item``; True when nobody waits for it any more
        (the item is then gone from the queue)."""
        owners = self._owners.get(item)
        if owners is None or owner not in owners:
            return item not in self._owners
        owners.remove(owner)
        self._drop_from(owner, item)
        if not owners:
            del self._owners[item]
        self._order = None
        return not owners

    def remove(self, item: T) -> None:
        for owner in self._owners.pop(item, ()):
            self._drop_from(owner, item)
        self._order = None

    def pop(self) -> T | None:
        """The next item: the owner whose turn it is gets its most wanted waiting item."""
        if not self._turns:
            return None
        owner = self._turns[0]
        item = self._pick(self._by_owner[owner], self._owners)
        self.remove(item)
        if owner in self._by_owner:  # still has items: to the back of the line
            self._turns.remove(owner)
            self._turns.append(owner)
        return item

    def order(self) -> list[T]:
        """Every waiting item in the order it would be served if nothing changed."""
        if self._order is None:
            by_owner = {o: collections.deque(q) for o, q in self._by_owner.items()}
            turns = collections.deque(self._turns)
            seen: set[T] = set()
            order: list[T] = []
            while turns:
                owner = turns.popleft()
                queue = by_owner[owner]
                for gone in [i for i in queue if i in seen]:
                    queue.remove(gone)
                if not queue:
                    continue
                item = self._pick(queue, self._owners)
                queue.remove(item)
                seen.add(item)
                order.append(item)
                if any(i not in seen for i in queue):
                    turns.append(owner)
            self._order = order
        return list(self._order)

    @staticmethod
    def _pick(queue: collections.deque[T], owners: dict[T, list[str]]) -> T:
        # The item the most sessions wait for (a class's shared p = 0 baseline serves everyone
        # at once), else the owner's oldest.
        return max(queue, key=lambda item: len(owners[item]))

    def positions(self) -> dict[T, int]:
        """1-based place in :meth:`order` of every waiting item."""
        return {item: i for i, item in enumerate(self.order(), start=1)}

    def owners(self, item: T) -> tuple[str, ...]:
        return tuple(self._owners.get(item, ()))

    def _drop_from(self, owner: str, item: T) -> None:
        queue = self._by_owner.get(owner)
        if queue is None:
            return
        try:
            queue.remove(item)
        except ValueError:
            return
        if not queue:
            del self._by_owner[owner]
            self._turns.remove(owner)


def thread_share(cores: int, threads_in_use: int, max_running: int, more_waiting: bool) -> int:
    """Torch intra-op threads for a run about to start; fixed for the run's whole life.

    With others waiting the cores will soon be split, so the run takes an equal share of them;
    alone it takes what is free (all of them on an idle server).
    """
    if more_waiting:
        return max(1, cores // max_running)
    return max(1, cores - threads_in_use)


class Scheduler(Generic[T]):
    """The fair queue, the running set and the cap; ``start(item, threads)`` launches a run.

    Priority items wait in a line of their own that is served first, and run in
    ``priority_slots`` slots above ``max_running`` (so they never wait for a running run to
    end); they get every core, as the manager pauses the other runs while one trains.
    Not thread-safe: the manager calls every method under its own lock.
    """

    def __init__(
        self,
        max_running: int,
        cores: int,
        start: Callable[[T, int], None],
        threads_of: Callable[[T], int],
        priority_slots: int = 1,
    ):
        if max_running < 1:
            raise ValueError(f"max_running must be >= 1, got {max_running}")
        if priority_slots < 1:
            raise ValueError(f"priority_slots must be >= 1, got {priority_slots}")
        self.max_running = max_running
        self.priority_slots = priority_slots
        self.cores = cores
        self.queue: FairQueue[T] = FairQueue()
        self.urgent: collections.deque[T] = collections.deque()  # priority items, FIFO
        self.running: set[T] = set()
        self.priority_running: set[T] = set()  # the running items that are priority items
        self._start = start
        self._threads_of = threads_of

    def enqueue(self, item: T, owner: str, priority: bool = False) -> None:
        if priority:
            self.promote(item)
        elif item not in self.urgent:
            self.queue.push(item, owner)

    def promote(self, item: T) -> None:
        """``item`` (new, or waiting in the fair queue) becomes a priority item."""
        if item in self.urgent or item in self.running:
            return
        self.queue.remove(item)
        self.urgent.append(item)

    def remove(self, item: T) -> None:
        """``item`` no longer waits, whichever line it waited in."""
        self.queue.remove(item)
        if item in self.urgent:
            self.urgent.remove(item)

    def drain(self) -> list[T]:
        """Every waiting item, in order, removed from the lines (shutdown)."""
        items = self.waiting()
        self.urgent.clear()
        while self.queue:
            self.queue.pop()
        return items

    def finished(self, item: T) -> None:
        self.running.discard(item)
        self.priority_running.discard(item)

    def is_waiting(self, item: T) -> bool:
        return item in self.urgent or item in self.queue

    def waiting_count(self) -> int:
        return len(self.urgent) + len(self.queue)

    def dispatch(self) -> list[T]:
        """Start waiting runs while there is room, priority runs first; returns those started."""
        started = []
        while self.urgent and len(self.priority_running) < self.priority_slots:
            item = self.urgent.popleft()
            self.running.add(item)
            self.priority_running.add(item)
            self._start(item, max(1, self.cores))  # the others pause meanwhile
            started.append(item)
        while self.queue and len(self.running) - len(self.priority_running) < self.max_running:
            item = self.queue.pop()
            in_use = sum(self._threads_of(r) for r in self.running - self.priority_running)
            threads = thread_share(self.cores, in_use, self.max_running, bool(self.queue))
            self.running.add(item)
            self._start(item, threads)
            started.append(item)
        return started

    def waiting(self) -> list[T]:
        """Every waiting item in the order it would start: priority items, then the queue's."""
        return [*self.urgent, *self.queue.order()]

    def positions(self) -> dict[T, int]:
        """1-based place in :meth:`waiting` of every waiting item."""
        return {item: i for i, item in enumerate(self.waiting(), start=1)}

"""The class board shares the server's refresh budget: more open boards, slower refresh."""

from __future__ import annotations

from dropout_demo.ui import classroom, lab


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_recent_pollers_count_each_viewer_once_and_forget_the_silent():
    clock = Clock()
    pollers = classroom.RecentPollers(window=10.0, clock=clock)
    pollers.seen("a:False")
    pollers.seen("a:False")
    pollers.seen("b:True")
    assert pollers.count() == 2
    clock.now += 9.0
    pollers.seen("c:False")
    assert pollers.count() == 3
    clock.now += 2.0  # a and b were last seen 11 s ago
    assert pollers.count() == 1


def test_the_board_refreshes_every_two_seconds_alone_and_slower_in_a_class(monkeypatch):
    monkeypatch.delenv(lab.TICK_BUDGET_ENV, raising=False)
    assert classroom.board_interval(1) == classroom.POLL_SECONDS
    assert classroom.board_interval(24) == classroom.POLL_SECONDS  # 12 a second: still 2 s
    assert classroom.board_interval(31) == 3.0  # 31 pages at 12 a second: every 2.6 s, rounded up
    # a student whose run is not training (waiting or done) refreshes half as often in a class
    assert classroom.board_interval(31, watching=False) == 6.0
    assert classroom.board_interval(1, watching=False) == classroom.POLL_SECONDS
    monkeypatch.setenv(lab.TICK_BUDGET_ENV, "31")
    assert classroom.board_interval(31) == classroom.POLL_SECONDS
    assert classroom.board_interval(31, watching=False) == classroom.POLL_SECONDS


def test_a_class_refreshes_out_of_step_and_a_lone_page_at_its_plain_interval():
    owners = [f"student-{i}" for i in range(30)]
    alone = [lab.staggered(3.0, who, pollers=1) for who in owners]
    assert alone == [3.0] * 30  # nobody to drift away from
    assert lab.staggered(None, "student-0", pollers=30) is None  # a page that does not poll
    shared = [lab.staggered(3.0, who, pollers=30) for who in owners]
    # Each session's own interval, the same on every call, within the stagger's range ...
    assert shared == [lab.staggered(3.0, who, pollers=30) for who in owners]
    assert all(3.0 <= s <= 3.0 * (1 + lab.STAGGER) for s in shared)
    # ... and spread: a class of 30 falls into many different intervals, so pages that start in
    # the same second drift apart instead of ticking in one burst.
    assert len(set(shared)) >= lab.STAGGER_STEPS // 2
    assert max(shared) - min(shared) >= 3.0 * lab.STAGGER / 2

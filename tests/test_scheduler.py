"""The fair queue (pure): round robin over owners, FIFO within one, shared items."""

from __future__ import annotations

import random

from dropout_demo.jobs.scheduler import FairQueue


def drain(queue: FairQueue) -> list:
    out = []
    while (item := queue.pop()) is not None:
        out.append(item)
    return out


def test_owners_take_turns_and_keep_their_own_order():
    q = FairQueue()
    for item in ("a1", "a2", "a3"):
        q.push(item, "a")
    q.push("b1", "b")
    q.push("c1", "c")
    q.push("b2", "b")
    assert q.order() == ["a1", "b1", "c1", "a2", "b2", "a3"]
    assert drain(q) == ["a1", "b1", "c1", "a2", "b2", "a3"]
    assert len(q) == 0 and q.pop() is None


def test_a_shared_item_is_served_once_and_before_an_owners_own_items():
    q = FairQueue()
    q.push("a1", "a")
    q.push("a2", "a")
    q.push("b1", "b")
    q.push("a2", "b")  # b waits for a2 too
    assert q.owners("a2") == ("a", "b")
    # At a's turn the run both wait for goes first: it serves two sessions at once.
    assert q.order() == ["a2", "b1", "a1"]
    assert drain(q) == ["a2", "b1", "a1"]


def test_a_class_comparing_gets_the_shared_baseline_first():
    q = FairQueue()
    for student in range(30):
        q.push(f"p{student % 10}", f"s{student}")  # their own p (10 distinct values)
        q.push("p=0", f"s{student}")  # the baseline everyone compares with
    assert q.order()[0] == "p=0"
    assert len(q.order()) == 11


def test_discarding_the_last_owner_removes_the_item():
    q = FairQueue()
    q.push("x", "a")
    q.push("x", "b")
    assert q.discard_owner("x", "a") is False
    assert "x" in q
    assert q.discard_owner("x", "b") is True
    assert "x" not in q and q.order() == []


def test_order_always_predicts_pop_under_random_operations():
    rng = random.Random(1)
    for _ in range(200):
        q = FairQueue()
        for step in range(rng.randint(1, 30)):
            owner = rng.choice("abcd")
            action = rng.random()
            if action < 0.6:
                q.push(f"i{rng.randint(0, 15)}", owner)
            elif action < 0.8 and len(q):
                item = rng.choice(q.order())
                q.discard_owner(item, rng.choice(q.owners(item)))
            elif len(q):
                predicted = q.order()[0]
                assert q.pop() == predicted, step
        predicted = q.order()
        assert len(predicted) == len(set(predicted)) == len(q)
        assert drain(q) == predicted
        assert q.positions() == {}

"""The node's shared memory at its edges: a full counters region, a lock left taken by
a killed process, a reader that fell a whole revocation ring behind."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator

import pytest

from gateway.node.shared import LOCK_WAIT, PROBES, REGIONS, RING_SLOTS, NodeMemory

CAPACITY = REGIONS * PROBES  # each region exactly as large as one probe run


@pytest.fixture
def memory() -> Iterator[NodeMemory]:
    node = NodeMemory.private(CAPACITY)
    yield node
    node.close()


def keys_in_region(memory: NodeMemory, region: int, n: int) -> list[str]:
    found = []
    for i in range(100_000):
        key = f"key_{i}"
        if memory.counters._digest("cred", key)[1] == region:
            found.append(key)
            if len(found) == n:
                return found
    raise AssertionError("not enough keys for one region")


def test_a_full_region_gives_one_slot_over_and_keeps_the_others(memory: NodeMemory) -> None:
    counters = memory.counters
    keys = keys_in_region(memory, 3, PROBES + 1)
    for key in keys[:PROBES]:
        assert counters.hit(2, "cred", key) is None
        assert counters.hit(2, "cred", key) is None
        assert counters.hit(2, "cred", key) is not None  # the third in a minute: refused
    assert counters.hit(2, "cred", keys[PROBES]) is None  # took a slot over
    restarted = [key for key in keys[:PROBES] if counters.hit(2, "cred", key) is None]
    assert len(restarted) == 1


def hold_and_die(memory: NodeMemory, region: int) -> None:
    memory.counters.locks[region].acquire()
    os._exit(0)  # without giving it back


def test_a_lock_left_taken_by_a_killed_process_is_taken_over(memory: NodeMemory) -> None:
    key = keys_in_region(memory, 5, 1)[0]
    child = multiprocessing.get_context("fork").Process(target=hold_and_die, args=(memory, 5))
    child.start()
    child.join()
    started = time.monotonic()
    assert memory.counters.hit(1, "cred", key) is None
    assert memory.counters.hit(1, "cred", key) is not None
    assert LOCK_WAIT <= time.monotonic() - started < LOCK_WAIT + 1
    started = time.monotonic()
    memory.counters.hit(1, "cred", key)  # the lock works again
    assert time.monotonic() - started < 0.1


def test_a_reader_a_whole_ring_behind_is_told_to_forget_everything(memory: NodeMemory) -> None:
    ring = memory.revocations
    seen = ring.seq()
    ring.publish(["key_a", "key_b"])
    assert ring.since(seen) == (seen + 2, ["key_a", "key_b"])
    ring.publish(f"key_{i}" for i in range(RING_SLOTS))
    now, ids = ring.since(seen)
    assert (now, ids) == (seen + 2 + RING_SLOTS, None)
    ring.publish(["k" * 100])  # too long for a slot: everyone forgets everything
    assert ring.since(now) == (now + 1, None)


def test_a_login_window_slides(memory: NodeMemory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Five attempts per 900 s: at the start of the next window the last window's
    attempts still count for as much of them as still overlaps."""
    counters = memory.counters
    clock = [900.0 * 1000]  # the start of a window
    monkeypatch.setattr(time, "time", lambda: clock[0])
    assert [counters.attempt(5, 900, "acct", "ada") for _ in range(5)] == [None] * 5
    assert counters.attempt(5, 900, "acct", "ada") == 900
    clock[0] += 900  # the next window begins: the previous one weighs in whole
    assert counters.attempt(5, 900, "acct", "ada") is not None
    clock[0] += 900 * 0.3  # 30 % slid out: 5 * 0.7 = 3.5 weigh in, so two more fit
    assert [counters.attempt(5, 900, "acct", "ada") for _ in range(2)] == [None] * 2
    assert counters.attempt(5, 900, "acct", "ada") is not None
    counters.clear(5, 900, "acct", "ada")
    assert counters.attempt(5, 900, "acct", "ada") is None

"""What a node's workers share (``gateway.node.segment`` holds it): the revocation
ring and the counters table.

**Revocations.** A ring of the last ``RING_SLOTS`` credential ids revoked or
changed, and a sequence number. A worker publishes into it before the call that
revoked returns; every worker compares the sequence with the one it has seen on
each authentication (one 8-byte read) and evicts what is new from its credential
cache. A worker that fell a whole ring behind clears its cache.

**Counters.** An open-addressed table of ``limits.node_counters`` slots, cut into
``REGIONS`` regions with a lock each: fixed one-minute windows for rate limits
(as the `limits` library counts them in Redis), totals for quotas, and windows of
any length weighted by the previous window for the login throttle. A slot is
found by a 16-byte BLAKE2b digest of what it counts, probing at most ``PROBES``
slots of its region; when none is free, the one least recently used is taken
over (and what it counted starts again from zero; a quota is seeded again from
the database's request count).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import multiprocessing
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from multiprocessing.synchronize import Lock
from pathlib import Path

from gateway.config import Settings
from gateway.node.segment import HEADER, Segment, private_path, segment_path

log = logging.getLogger("gateway.node")
RING_SLOTS = 4096
RING_SLOT = 64  # a length byte, then the id
RING = 64 + RING_SLOTS * RING_SLOT  # the sequence number, padded, then the slots
CLEAR_ALL = 255  # a length byte that means "forget every cached credential"
REGIONS = 64
PROBES = 32
SLOT = struct.Struct("<16sqqq")  # digest, window, count, count in the previous window
WINDOW = struct.Struct("<q")
COUNTS = struct.Struct("<qqq")
LOCK_WAIT = 0.5  # seconds: a region lock held this long belonged to a dead worker
EMPTY = bytes(16)
SEQ = struct.Struct("<Q")
RING_LOCK = REGIONS  # regions take locks 0 .. REGIONS - 1
MAX_DIGESTS = 100_000  # digests remembered per process before the memo starts again
Step = Callable[[int, int, float, int, int, int], tuple[int, int, int | None]]


def segment_size(counters: int) -> int:
    return HEADER + RING + counters * SLOT.size


class Revocations:
    """The ring of revoked credential ids."""

    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        self.view = segment.view
        self.at = HEADER

    def seq(self) -> int:
        seq: int = SEQ.unpack_from(self.view, self.at)[0]
        return seq

    def publish(self, credential_ids: Iterable[str]) -> None:
        ids = [i.encode() for i in credential_ids]
        if not ids:
            return
        self.segment.lock(RING_LOCK)
        try:
            seq = self.seq()
            for data in ids:
                seq += 1
                slot = self.at + 64 + (seq % RING_SLOTS) * RING_SLOT
                if len(data) < RING_SLOT:
                    self.view[slot] = len(data)
                    self.view[slot + 1 : slot + 1 + len(data)] = data
                else:
                    self.view[slot] = CLEAR_ALL
            SEQ.pack_into(self.view, self.at, seq)  # after the slots: readers trust it
        finally:
            self.segment.unlock(RING_LOCK)

    def since(self, seen: int) -> tuple[int, list[str] | None]:
        """The sequence now and the ids published after ``seen``; None for "too many:
        forget everything". Read without the lock: a slot is complete before the
        sequence that covers it is written, and a slot overwritten while it was read
        shows as the sequence having moved a whole ring past it."""
        now = self.seq()
        if now - seen >= RING_SLOTS:
            return now, None
        ids: list[str] = []
        for seq in range(seen + 1, now + 1):
            slot = self.at + 64 + (seq % RING_SLOTS) * RING_SLOT
            size = self.view[slot]
            if size == CLEAR_ALL:
                return now, None
            ids.append(bytes(self.view[slot + 1 : slot + 1 + size]).decode())
        if self.seq() - seen >= RING_SLOTS:
            return now, None
        return now, ids


class NodeCounters:
    """The counters table (``gateway.metering.counters.Counters``), exact across the
    node's workers. Counting never waits.

    A region's lock is a process-shared semaphore, taken and given back without a
    system call when nobody else holds it (the request path takes two per request
    by default; record locks, a system call each way, cost ten times as much). A
    worker killed while holding one would leave it taken: a lock not had within
    ``LOCK_WAIT`` (thousands of times longer than anyone holds it) is taken to be a
    dead worker's, and is taken over."""

    def __init__(self, segment: Segment, capacity: int, locks: Sequence[Lock]) -> None:
        self.map = segment.map
        self.base = HEADER + RING
        self.region_slots = capacity // REGIONS
        self.probes = min(PROBES, self.region_slots)
        self.locks = locks
        self._digests: dict[tuple[str, str], tuple[bytes, int, int]] = {}
        self._homes: dict[bytes, int] = {}  # digest -> the slot it was last found in

    def _digest(self, kind: str, key: str) -> tuple[bytes, int, int]:
        """The digest of what is counted, its region and the offset of its home slot."""
        found = self._digests.get((kind, key))
        if found is None:
            if len(self._digests) >= MAX_DIGESTS:
                self._digests.clear()
            digest = hashlib.blake2b(f"{kind}\0{key}".encode(), digest_size=16).digest()
            region = digest[0] % REGIONS
            home = int.from_bytes(digest[8:], "little") % self.region_slots
            found = self._digests[(kind, key)] = (digest, region, home)
        return found

    def _slot(self, digest: bytes, region: int, home: int) -> tuple[int, bool]:
        """The slot counting ``digest`` (found), or the one to take for it; under the
        region's lock."""
        data, size, slots = self.map, SLOT.size, self.region_slots
        first = self.base + region * slots * size
        stalest, stalest_window = -1, math.inf
        for probe in range(self.probes):
            at = first + ((home + probe) % slots) * size
            held = data[at : at + 16]
            if held == digest:
                return at, True
            if held == EMPTY:
                return at, False
            window = WINDOW.unpack_from(data, at + 16)[0]
            if window < stalest_window:
                stalest, stalest_window = at, window
        return stalest, False

    def _update(
        self, kind: str, key: str, period: int, step: Step, a: int, b: int = 0
    ) -> int | None:
        """Read the slot of (kind, key) for the current window of ``period`` seconds
        (0: one count that never restarts), let ``step`` decide, and write back what it
        returns. The window is also when the slot was last used. Under the region's
        lock, kept as short as can be: every worker counting the same credential waits
        on it."""
        digest, region, home = self._digests.get((kind, key)) or self._digest(kind, key)
        now = time.time()
        window = int(now // (period or 60))
        lock = self.locks[region]
        if not lock.acquire(True, LOCK_WAIT):
            log.warning("counters region %d was held for %.1f s: taking it over", region, LOCK_WAIT)
        try:
            data = self.map
            at = self._homes.get(digest, -1)  # where it was last found
            if at < 0 or data[at : at + 16] != digest:
                at, found = self._slot(digest, region, home)
                if not found:
                    data[at : at + 16] = digest
                    COUNTS.pack_into(data, at + 16, 0, 0, 0)
                if len(self._homes) >= MAX_DIGESTS:
                    self._homes.clear()
                self._homes[digest] = at
            held, count, previous = COUNTS.unpack_from(data, at + 16)
            if held != window and period:
                previous = count if held == window - 1 else 0
                count = 0
            count, previous, answer = step(count, previous, now - window * period, period, a, b)
            COUNTS.pack_into(data, at + 16, window, count, previous)
            return answer
        finally:
            with contextlib.suppress(ValueError):  # given back already by a take-over
                lock.release()

    def hit(self, per_minute: int, kind: str, key: str) -> int | None:
        """A fixed one-minute window; None if allowed, else seconds until it ends."""
        return self._update(kind, key, 60, fixed_window, per_minute)

    def take(self, credential_id: str, limit: int, already_used: int) -> bool:
        """One request of a total quota; False once ``limit`` is reached."""
        return self._update("quota", credential_id, 0, quota, limit, already_used) is None

    def attempt(self, limit: int, period: int, kind: str, key: str) -> int | None:
        """A window of ``period`` seconds that slides: the previous window's count
        weighs as much as it still overlaps. None if allowed, else seconds to wait."""
        return self._update(kind, key, period, sliding_window, limit)

    def clear(self, limit: int, period: int, kind: str, key: str) -> None:
        self._update(kind, key, period, cleared, 0)

    async def close(self) -> None:
        return None


# The steps of ``NodeCounters._update``: (count, previous window's count, seconds into
# the window, window length, two arguments) -> the new two counts and the answer.


def fixed_window(
    count: int, previous: int, elapsed: float, period: int, limit: int, _: int
) -> tuple[int, int, int | None]:
    if count >= limit:
        return count, previous, max(1, math.ceil(period - elapsed))
    return count + 1, previous, None


def quota(
    count: int, previous: int, elapsed: float, period: int, limit: int, already_used: int
) -> tuple[int, int, int | None]:
    used = max(count, already_used)
    return (used, 0, 1) if used >= limit else (used + 1, 0, None)


def sliding_window(
    count: int, previous: int, elapsed: float, period: int, limit: int, _: int
) -> tuple[int, int, int | None]:
    overlap = previous * (1 - elapsed / period)
    if count + overlap < limit:
        return count + 1, previous, None
    if count >= limit or previous == 0:
        return count, previous, max(1, math.ceil(period - elapsed))
    free_at = period * (1 - (limit - count) / previous)  # enough of it has slid out
    return count, previous, max(1, math.ceil(free_at - elapsed))


def cleared(
    count: int, previous: int, elapsed: float, period: int, _: int, __: int
) -> tuple[int, int, int | None]:
    return 0, 0, None


def region_locks() -> list[Lock]:
    """The counters table's locks: made by the supervisor, handed to each worker as
    it is started (a semaphore cannot be found by name later)."""
    context = multiprocessing.get_context("spawn")
    return [context.Lock() for _ in range(REGIONS)]


class NodeMemory:
    """The node's segment and what it holds."""

    def __init__(self, segment: Segment, counters: int, locks: Sequence[Lock]) -> None:
        self.segment = segment
        self.revocations = Revocations(segment)
        self.counters = NodeCounters(segment, counters, locks)

    @classmethod
    def create(cls, path: Path, counters: int, locks: Sequence[Lock]) -> NodeMemory:
        """The supervisor's: a new, zeroed segment at ``path``."""
        return cls(Segment(path, segment_size(counters), create=True), counters, locks)

    @classmethod
    def attach(cls, path: Path, counters: int, locks: Sequence[Lock]) -> NodeMemory:
        """A worker's: the supervisor's segment."""
        return cls(Segment(path, segment_size(counters), create=False), counters, locks)

    @classmethod
    def private(cls, counters: int) -> NodeMemory:
        """A node of one process (an app served in tests): its own segment, unlinked
        at once, so nothing is left behind."""
        locks = [multiprocessing.Lock() for _ in range(REGIONS)]
        memory = cls.create(private_path(), counters, locks)
        memory.segment.unlink()
        return memory

    def close(self) -> None:
        self.segment.close()


def tell_node(settings: Settings, credential_ids: list[str]) -> None:
    """Publish changed credentials to the node served with these settings on this
    machine, if there is one (the CLI, after it revoked or changed them)."""
    if not credential_ids:
        return
    size = segment_size(settings.limits.node_counters)
    try:
        segment = Segment(segment_path(settings), size, create=False)
    except (OSError, ValueError):
        return  # no node here (or another layout): it will poll the database
    try:
        Revocations(segment).publish(credential_ids)
    finally:
        segment.close()

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

import hashlib
import math
import struct
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from gateway.config import Settings
from gateway.node.segment import HEADER, Segment, private_path, segment_path

RING_SLOTS = 4096
RING_SLOT = 64  # a length byte, then the id
RING = 64 + RING_SLOTS * RING_SLOT  # the sequence number, padded, then the slots
CLEAR_ALL = 255  # a length byte that means "forget every cached credential"
REGIONS = 64
PROBES = 32
SLOT = struct.Struct("<16sqqq")  # digest, window, count, count in the previous window
EMPTY = bytes(16)
SEQ = struct.Struct("<Q")
RING_LOCK = REGIONS  # regions take locks 0 .. REGIONS - 1
MAX_DIGESTS = 100_000  # digests remembered per process before the memo starts again
# (count, previous window's count, seconds into the window) -> the new two and the answer
Step = Callable[[int, int, float], tuple[int, int, int | None]]


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
    node's workers. Counting never waits."""

    def __init__(self, segment: Segment, capacity: int) -> None:
        self.segment = segment
        self.view = segment.view
        self.base = HEADER + RING
        self.region_slots = capacity // REGIONS
        self._digests: dict[tuple[str, str], tuple[bytes, int]] = {}

    def _digest(self, kind: str, key: str) -> tuple[bytes, int]:
        found = self._digests.get((kind, key))
        if found is None:
            if len(self._digests) >= MAX_DIGESTS:
                self._digests.clear()
            digest = hashlib.blake2b(f"{kind}\0{key}".encode(), digest_size=16).digest()
            found = self._digests[(kind, key)] = (digest, digest[0] % REGIONS)
        return found

    def _slot(self, digest: bytes, region: int) -> tuple[int, bool]:
        """The slot counting ``digest`` (found), or the one to take for it; under the
        region's lock."""
        view, size = self.view, SLOT.size
        first = self.base + region * self.region_slots * size
        home = int.from_bytes(digest[8:], "little") % self.region_slots
        stalest, stalest_window = -1, math.inf
        for probe in range(min(PROBES, self.region_slots)):
            at = first + ((home + probe) % self.region_slots) * size
            held = view[at : at + 16]
            if held == digest:
                return at, True
            if held == EMPTY:
                return at, False
            window = SLOT.unpack_from(view, at)[1]
            if window < stalest_window:
                stalest, stalest_window = at, window
        return stalest, False

    def _update(self, kind: str, key: str, period: int, step: Step) -> int | None:
        """Read the slot of (kind, key) for the current window of ``period`` seconds
        (0: one count that never restarts), let ``step`` decide, and write back what it
        returns. The window is also when the slot was last used."""
        digest, region = self._digest(kind, key)
        now = time.time()
        window = int(now // (period or 60))
        self.segment.lock(region)
        try:
            at, found = self._slot(digest, region)
            held, count, previous = (SLOT.unpack_from(self.view, at)[1:]) if found else (0, 0, 0)
            if held != window and period:
                previous = count if held == window - 1 else 0
                count = 0
            count, previous, answer = step(count, previous, now - window * period)
            SLOT.pack_into(self.view, at, digest, window, count, previous)
            return answer
        finally:
            self.segment.unlock(region)

    def hit(self, per_minute: int, kind: str, key: str) -> int | None:
        """A fixed one-minute window; None if allowed, else seconds until it ends."""

        def step(count: int, previous: int, elapsed: float) -> tuple[int, int, int | None]:
            if count >= per_minute:
                return count, previous, max(1, math.ceil(60 - elapsed))
            return count + 1, previous, None

        return self._update(kind, key, 60, step)

    def take(self, credential_id: str, limit: int, already_used: int) -> bool:
        """One request of a total quota; False once ``limit`` is reached."""

        def step(count: int, previous: int, elapsed: float) -> tuple[int, int, int | None]:
            used = max(count, already_used)
            return (used, 0, 1) if used >= limit else (used + 1, 0, None)

        return self._update("quota", credential_id, 0, step) is None

    def attempt(self, limit: int, period: int, kind: str, key: str) -> int | None:
        """A window of ``period`` seconds that slides: the previous window's count
        weighs as much as it still overlaps. None if allowed, else seconds to wait."""

        def step(count: int, previous: int, elapsed: float) -> tuple[int, int, int | None]:
            overlap = previous * (1 - elapsed / period)
            if count + overlap >= limit:
                if count >= limit or previous == 0:
                    return count, previous, max(1, math.ceil(period - elapsed))
                # until enough of the previous window has slid out
                free_at = period * (1 - (limit - count) / previous)
                return count, previous, max(1, math.ceil(free_at - elapsed))
            return count + 1, previous, None

        return self._update(kind, key, period, step)

    def clear(self, limit: int, period: int, kind: str, key: str) -> None:
        self._update(kind, key, period, lambda count, previous, elapsed: (0, 0, None))

    async def close(self) -> None:
        return None


class NodeMemory:
    """The node's segment and what it holds."""

    def __init__(self, segment: Segment, counters: int) -> None:
        self.segment = segment
        self.revocations = Revocations(segment)
        self.counters = NodeCounters(segment, counters)

    @classmethod
    def create(cls, path: Path, counters: int) -> NodeMemory:
        """The supervisor's: a new, zeroed segment at ``path``."""
        return cls(Segment(path, segment_size(counters), create=True), counters)

    @classmethod
    def attach(cls, path: Path, counters: int) -> NodeMemory:
        """A worker's (or the CLI's): the supervisor's segment."""
        return cls(Segment(path, segment_size(counters), create=False), counters)

    @classmethod
    def private(cls, counters: int) -> NodeMemory:
        """A node of one process (an app served in tests): its own segment, unlinked
        at once, so nothing is left behind."""
        memory = cls.create(private_path(), counters)
        memory.segment.unlink()
        return memory

    def close(self) -> None:
        self.segment.close()


def tell_node(settings: Settings, credential_ids: list[str]) -> None:
    """Publish changed credentials to the node served with these settings on this
    machine, if there is one (the CLI, after it revoked or changed them)."""
    if not credential_ids:
        return
    try:
        memory = NodeMemory.attach(segment_path(settings), settings.limits.node_counters)
    except (OSError, ValueError):
        return  # no node here (or another layout): it will poll the database
    try:
        memory.revocations.publish(credential_ids)
    finally:
        memory.close()

"""The node's shared memory: one file mapped by the supervisor and every worker.

State that must hold for the whole node (revocations, rate-limit and quota
counters, the login throttle) lives here, as nginx workers share a
``lua_shared_dict``: reading or updating it never leaves the machine. The file
sits in ``/dev/shm`` (memory, not disk) where there is one. Its path follows from
the config (database, listener), so the CLI run against the same config finds
the node it manages and can publish what it revokes.

The revocation ring's lock is a POSIX record lock (``fcntl.lockf``) on a byte
of the file: the CLI, which inherited nothing from the supervisor, can take it
too, and it dies with its process. (The counters' regions, taken on every
request, use semaphores instead: ``gateway.node.shared.NodeCounters``.) Written
here rather than with ``multiprocessing.shared_memory``, whose segments are
found by name only by the processes that are told it, and whose resource
tracker would unlink the segment when a worker exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import secrets
import tempfile
from pathlib import Path

from gateway.config import Settings

MAGIC = b"gwnode01"
HEADER = 64  # bytes before the first area
LOCKS = 1 << 40  # locks are bytes from here on, beyond any data


def memory_folder() -> Path:
    shm = Path("/dev/shm")  # noqa: S108 - created exclusively, never followed (Segment)
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def node_name(settings: Settings) -> str:
    """What tells this node from others sharing its database: its listener."""
    listen = f"{settings.listen.host}:{settings.listen.port}"
    return hashlib.sha256(f"{settings.database.url}|{listen}".encode()).hexdigest()[:16]


def debit_holder(node: str, worker: int, pid: int) -> str:
    """How a worker's wallet debits name it (``Store.wallet_release``); the node's
    name followed by "/" names every worker of the node."""
    return f"{node}/{worker}/{pid}"


def segment_path(settings: Settings) -> Path:
    """Where a node with these settings keeps its shared memory."""
    return memory_folder() / f"gateway-node-{node_name(settings)}"


def private_path() -> Path:
    return memory_folder() / f"gateway-node-{os.getpid()}-{secrets.token_hex(8)}"


class Segment:
    """A mapped file of ``size`` bytes, with locks on its byte ranges."""

    def __init__(self, path: Path, size: int, *, create: bool) -> None:
        self.path = path
        flags = os.O_RDWR | os.O_NOFOLLOW
        if create:
            # A shared folder: a file left by an earlier run is replaced, never followed
            # or reused, and one held by another user makes the start fail.
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            flags |= os.O_CREAT | os.O_EXCL
        self.fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(self.fd, size)  # zero-filled
                os.pwrite(self.fd, MAGIC, 0)
            elif os.fstat(self.fd).st_size != size or os.pread(self.fd, 8, 0) != MAGIC:
                raise ValueError(f"{path} is not a node segment of this layout")
            self.map = mmap.mmap(self.fd, size)
        except BaseException:
            os.close(self.fd)
            raise
        self.view = memoryview(self.map)

    def lock(self, number: int) -> None:
        """Take lock ``number``: one byte far past the data stands for it."""
        fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, LOCKS + number)

    def unlock(self, number: int) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, LOCKS + number)

    def close(self) -> None:
        self.view.release()
        self.map.close()
        os.close(self.fd)

    def unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

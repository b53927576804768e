"""The spool's SQLite file: configuration, schema, the one write transaction, reads, checkpoints.

:class:`~trio_events.agent.SpoolEventBuffer` keeps the buffer's logic; this module is only the
file. One row of ``chunks`` holds the events of one AddEvents request (those that were kept), as
one concatenated blob plus their event types and sizes: writing one 180 KB row is several times
cheaper than 1,000 small ones, and the buffer reads whole batches anyway. ``cursors`` holds, per
publisher, the first event it has not settled (delivered, or dropped and counted).

Every change is one transaction (:meth:`SpoolFile.write`): a request's chunk together with the
cursors and deletions its evictions imply; a publisher's acknowledgement together with the
chunks nobody needs any more. What a restart sees is therefore always a state the buffer was in.
Byte order of ``types`` and ``sizes`` is the machine's: a spool is not moved between machines.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import sqlite3
from typing import TYPE_CHECKING, Final, Literal, final

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

logger = logging.getLogger("trio_events.agent.spool_db")

SCHEMA_VERSION: Final = 1
APPLICATION_ID: Final = 0x74657370  # "tesp": tells a spool from the event store or anything else
# Larger pages make appending a 100-200 KB chunk cheaper (fewer overflow pages to chain).
_PAGE_SIZE: Final = 16384
_JOURNAL_SIZE_LIMIT: Final = 64 * 1024 * 1024  # the WAL file is truncated back to this
# Wake the checkpointer early once this much has been appended since its last round.
_CHECKPOINT_AFTER_BYTES: Final = 32 * 1024 * 1024
_SQLITE_DEFAULT_AUTOCHECKPOINT: Final = 1000

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS chunks (
    first_seq INTEGER PRIMARY KEY,  -- sequence number of the chunk's first event
    count     INTEGER NOT NULL,     -- events in the chunk, numbered first_seq, first_seq + 1, ...
    types     BLOB NOT NULL,        -- array('i') of RayEvent.EventType numbers
    sizes     BLOB NOT NULL,        -- array('q') of the serialized events' lengths
    data      BLOB NOT NULL         -- the serialized RayEvents, concatenated
);
CREATE TABLE IF NOT EXISTS cursors (
    consumer  TEXT PRIMARY KEY,
    next_seq  INTEGER NOT NULL      -- the first event this consumer has not settled
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS head (
    only      INTEGER PRIMARY KEY CHECK (only = 0),
    next_seq  INTEGER NOT NULL      -- the oldest event kept while there is no consumer
);
"""

Chunk = tuple[int, int, bytes, bytes, bytes]  # first_seq, count, types, sizes, data

# SQLite's primary result code for "database or disk is full".
_SQLITE_FULL: Final = 13
# Room the file system must keep beyond a request's data: the WAL frames, index pages and the
# cursor updates that acknowledge deliveries (which is what frees space) all need some.
DEFAULT_MIN_FREE_BYTES: Final = 8 * 1024 * 1024


class SpoolFullError(Exception):
    """The spool's bound on its file, or its file system, has no room for a request; it
    recovers on its own once deliveries free space. ``str()`` is one sentence."""


class SpoolReplacedError(Exception):
    """The spool's file was deleted or replaced while the agent ran; what it acknowledged
    would not survive a restart. Permanent until the agent is restarted."""


def is_disk_full(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return (code is not None and code & 0xFF == _SQLITE_FULL) or "full" in str(exc)


def _check_config(config: SpoolConfig) -> None:
    if not config.path:
        raise ValueError("SpoolConfig.path must name a file.")
    if isinstance(config.max_events, bool) or config.max_events < 1:
        raise ValueError(f"SpoolConfig.max_events must be >= 1, got {config.max_events!r}.")
    if config.max_bytes is not None and config.max_bytes < 1:
        raise ValueError(
            f"SpoolConfig.max_bytes must be None (no byte bound) or >= 1, got {config.max_bytes!r}."
        )
    if config.synchronous not in ("normal", "full"):
        raise ValueError(
            f"SpoolConfig.synchronous must be 'normal' or 'full', got {config.synchronous!r}."
        )
    if config.max_file_bytes is not None and config.max_file_bytes < 1:
        raise ValueError(
            "SpoolConfig.max_file_bytes must be None (only the disk bounds the file) or >= 1, "
            f"got {config.max_file_bytes!r}."
        )
    if config.min_free_bytes < 0:
        raise ValueError(f"SpoolConfig.min_free_bytes must be >= 0, got {config.min_free_bytes!r}.")
    if not (config.write_timeout > 0 and math.isfinite(config.write_timeout)):
        raise ValueError(
            f"SpoolConfig.write_timeout must be > 0 seconds, got {config.write_timeout!r}."
        )
    if not (config.checkpoint_interval > 0 and math.isfinite(config.checkpoint_interval)):
        raise ValueError(
            f"SpoolConfig.checkpoint_interval must be > 0 seconds, got "
            f"{config.checkpoint_interval!r}."
        )


@final
@attrs.frozen
class SpoolConfig:
    """Where the spool lives and how much it may hold (see the module docstring).

    ``max_events`` and ``max_bytes`` bound the unread events (evicting or refusing by the
    agent's overflow policy); ``max_file_bytes`` bounds the files themselves (database, WAL
    and shared memory), and ``min_free_bytes`` is what the file system must keep free: past
    either, requests are refused with RESOURCE_EXHAUSTED until deliveries free space.
    ``write_timeout`` is how long a request waits for a write in flight before it is refused
    (a stalled disk); the spool is then reported unhealthy.
    """

    path: str
    max_events: int = 1_000_000
    max_bytes: int | None = 1024 * 1024 * 1024
    synchronous: Literal["normal", "full"] = "normal"
    checkpoint_interval: float = 1.0  #: seconds between background WAL checkpoints
    max_file_bytes: int | None = None
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES
    write_timeout: float = 5.0

    def __attrs_post_init__(self) -> None:
        _check_config(self)


@final
@attrs.frozen
class SpoolStatistics:
    path: str
    events_on_disk: int  #: unread events plus those taken and not yet settled
    bytes_on_disk: int  #: their serialized size (the file is somewhat larger)
    buffered_bytes: int  #: serialized size of the events some consumer has not read
    max_bytes: int | None
    resumed_events: int  #: events found in the file when it was opened
    next_sequence: int  #: the sequence number the next stored event gets
    settled: Mapping[str, int]  #: where each known consumer resumes after a restart


def _sentence(path: str, exc: sqlite3.Error) -> str:
    return f"The spool {path!r} cannot be used ({exc})."


@final
class SpoolFile:
    """One connection to a spool file, used by one thread at a time.

    Opened with ``check_same_thread=False`` because it is opened in a worker thread and then
    used from the trio thread; the buffer never uses it from two threads at once. Checkpoints
    use a second connection of their own (:meth:`open_checkpointer`).
    """

    def __init__(self, config: SpoolConfig) -> None:
        self.path = path = config.path
        try:
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
            self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise ValueError(_sentence(path, exc)) from None
        try:
            self._prepare(config.synchronous)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise ValueError(_sentence(path, exc)) from None
        except BaseException:
            self._conn.close()
            raise
        try:
            self._identity = _identity(path)
            # Reads get their own connection: in WAL mode they never wait for the writer, so a
            # write in a worker thread never blocks a read on the trio thread.
            self._reader = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except BaseException:
            self._conn.close()
            raise
        try:
            # Read once now: a connection opens the WAL and shared memory on its first read,
            # which fails once the file is deleted; opened, it goes on reading the open file.
            self._reader.execute("SELECT count(*) FROM cursors").fetchall()
        except BaseException:
            self._reader.close()
            self._conn.close()
            raise
        self._closed = False
        self._unflushed = 0  # bytes appended since the last checkpoint round
        self._flush_soon = trio.Event()
        self._max_file_bytes = config.max_file_bytes
        self._min_free_bytes = config.min_free_bytes

    def _prepare(self, synchronous: str) -> None:
        conn = self._conn
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if tables and application_id != APPLICATION_ID:
            raise ValueError(
                f"{self.path!r} is an SQLite database but not a trio-events spool; "
                "give --spool a path of its own."
            )
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"The spool {self.path!r} has schema version {version}, newer than this "
                f"trio-events understands ({SCHEMA_VERSION}); upgrade trio-events."
            )
        if not tables:
            conn.execute(f"PRAGMA page_size={_PAGE_SIZE}")  # only possible before any table
            # Pages of deleted chunks can then be given back to the file system when it fills
            # up (release_space); also only possible before any table.
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise ValueError(
                f"The spool {self.path!r} cannot use SQLite's WAL mode (got {mode!r}); put it "
                "on a local file system."
            )
        # NORMAL in WAL mode: a commit is one write() to the WAL and no fsync, so a committed
        # request survives the process being killed; only a power loss or an operating-system
        # crash can take back the last commits. FULL adds an fsync per commit to survive those.
        conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        conn.execute(f"PRAGMA journal_size_limit={_JOURNAL_SIZE_LIMIT}")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # ---- reading -----------------------------------------------------------------------------

    def load(self) -> tuple[list[tuple[int, int, bytes, bytes]], dict[str, int], int]:
        """Every chunk's ``(first_seq, count, types, sizes)`` in order, the cursors, and the
        head recorded for when there is no consumer (0 if none was)."""
        conn = self._conn
        chunks = conn.execute(
            "SELECT first_seq, count, types, sizes FROM chunks ORDER BY first_seq"
        ).fetchall()
        cursors = dict(conn.execute("SELECT consumer, next_seq FROM cursors").fetchall())
        head = conn.execute("SELECT next_seq FROM head").fetchone()
        return chunks, cursors, head[0] if head else 0

    def read(self, first_seq: int, stop: int) -> list[tuple[int, bytes]]:
        """``(first_seq, data)`` of the chunks that start in ``[first_seq, stop)``, in order."""
        rows: list[tuple[int, bytes]] = self._reader.execute(
            "SELECT first_seq, data FROM chunks WHERE first_seq >= ? AND first_seq < ? "
            "ORDER BY first_seq",
            (first_seq, stop),
        ).fetchall()
        return rows

    # ---- writing -----------------------------------------------------------------------------

    def write(
        self,
        *,
        chunk: Chunk | None = None,
        cursors: Iterable[tuple[str, int]] = (),
        forget: str | None = None,
        delete_before: int | None = None,
        head: int | None = None,
    ) -> None:
        """One transaction: add ``chunk``, upsert ``cursors``, delete the cursor of ``forget``
        and the chunks starting before ``delete_before``, record ``head``. Raises sqlite3.Error
        after rolling back, so the file is unchanged when this fails."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if chunk is not None:
                conn.execute("INSERT INTO chunks VALUES (?, ?, ?, ?, ?)", chunk)
            conn.executemany(
                "INSERT INTO cursors VALUES (?, ?) "
                "ON CONFLICT (consumer) DO UPDATE SET next_seq = excluded.next_seq",
                cursors,
            )
            if forget is not None:
                conn.execute("DELETE FROM cursors WHERE consumer = ?", (forget,))
            if delete_before is not None:
                conn.execute("DELETE FROM chunks WHERE first_seq < ?", (delete_before,))
            if head is not None:
                conn.execute("INSERT OR REPLACE INTO head VALUES (0, ?)", (head,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # ---- keeping the promise -----------------------------------------------------------------

    def check_identity(self) -> None:
        """Raise SpoolReplacedError when the path no longer names the file opened."""
        try:
            now = _identity(self.path)
        except FileNotFoundError:
            raise SpoolReplacedError(
                f"The spool {self.path!r} was deleted while the agent was running; restart the "
                "agent to open a new one (what it held is lost)."
            ) from None
        if now != self._identity:
            raise SpoolReplacedError(
                f"The spool {self.path!r} was replaced by another file while the agent was "
                "running; restart the agent."
            )

    def file_bytes(self) -> int:
        """Bytes the spool's files take: the database, its WAL and its shared memory."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(self.path + suffix).st_size
        return total

    def check_room(self, incoming: int) -> None:
        """Raise SpoolFullError when ``incoming`` bytes more would pass ``max_file_bytes`` or
        leave the file system with less than ``min_free_bytes`` free.

        A write takes ``incoming`` bytes in the WAL now, and at the next checkpoint as much in
        the database, less the pages deleted chunks left free there (reused, not returned to
        the file system); those free pages do not count against ``max_file_bytes``.
        """
        page_size, free_pages = (
            self._conn.execute(f"PRAGMA {pragma}").fetchone()[0]
            for pragma in ("page_size", "freelist_count")
        )
        reusable = page_size * free_pages
        need = incoming + max(0, incoming - reusable)
        if self._max_file_bytes is not None:
            size = self.file_bytes() - reusable
            if size + need > self._max_file_bytes:
                raise SpoolFullError(
                    f"The spool {self.path!r} holds {size} bytes; {need} more would pass its "
                    f"bound of {self._max_file_bytes} (--spool-max-file-bytes)."
                )
        stats = os.statvfs(os.path.dirname(os.path.abspath(self.path)))
        free = stats.f_bavail * stats.f_frsize
        if free - need < self._min_free_bytes:
            raise SpoolFullError(
                f"The file system of the spool {self.path!r} has {free} bytes free; a request "
                f"needing {need} would leave less than {self._min_free_bytes} "
                "(--spool-min-free-bytes)."
            )

    def release_space(self) -> bool:
        """Give the pages of deleted chunks back to the file system and truncate the WAL to
        nothing; False if the WAL could not be truncated now (a reader, or no room), which the
        next attempt retries. Spools created before auto_vacuum only truncate the WAL."""
        try:
            self._conn.execute("PRAGMA incremental_vacuum").fetchall()
        except sqlite3.Error as exc:
            logger.warning("Releasing the spool %s's free pages failed: %s.", self.path, exc)
        return self.truncate_wal()

    def truncate_wal(self) -> bool:
        """Copy the WAL into the database and truncate it to nothing; False if it could not
        finish (a reader, or no room), which the next attempt retries."""
        try:
            busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            logger.warning("Truncating the spool %s's WAL failed: %s.", self.path, exc)
            return False
        return not busy

    def set_autocheckpoint(self, pages: int) -> None:
        """0 while :meth:`checkpoints` runs; SQLite's default (1000) otherwise."""
        self._conn.execute(f"PRAGMA wal_autocheckpoint={pages}")

    # ---- checkpoints (in a worker thread) ----------------------------------------------------

    def appended(self, size: int) -> None:
        """``size`` bytes were committed: wake the checkpointer early when the WAL grows."""
        self._unflushed += size
        if self._unflushed > _CHECKPOINT_AFTER_BYTES:
            self._flush_soon.set()

    async def checkpoints(
        self, interval: float, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Until cancelled, copy the WAL into the database file from a worker thread, every
        ``interval`` seconds or after 32 MiB of appends, with automatic checkpoints off."""
        # A connection of its own, opened in a worker thread and used only from worker threads.
        connect = functools.partial(sqlite3.connect, check_same_thread=False, isolation_level=None)
        conn = await trio.to_thread.run_sync(connect, self.path)
        try:
            self.set_autocheckpoint(0)
            task_status.started()
            while True:
                with trio.move_on_after(interval):
                    await self._flush_soon.wait()
                self._flush_soon = trio.Event()
                self._unflushed = 0
                await trio.to_thread.run_sync(self._checkpoint, conn)
        finally:
            conn.close()
            if not self._closed:
                self.set_autocheckpoint(_SQLITE_DEFAULT_AUTOCHECKPOINT)

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        # PASSIVE: never waits for, nor blocks, the writer on the trio thread.
        try:
            busy, log, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            # The next round tries again; meanwhile the WAL grows, it loses nothing.
            logger.warning("Checkpointing the spool %s failed: %s.", self.path, exc)
            return
        logger.debug("Spool checkpoint: %d of %d WAL frames (busy=%d).", done, log, busy)

    # ---- lifecycle ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the connection (idempotent); the last one to close merges the WAL back."""
        if not self._closed:
            self._closed = True
            self._reader.close()
            self._conn.close()


def _identity(path: str) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino

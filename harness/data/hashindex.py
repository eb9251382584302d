"""sha256 of files, computed once per file content and remembered across runs.

Feature-cache entries are addressed by the sha256 of an image file's bytes. Hashing means reading every file
again, in every run: at CoOp scale (133,696 test images) that is a second full pass over the data. The index
remembers each file's hash under (resolved path, size, mtime in ns), in `HARNESS_CACHE/file_hashes.sqlite`
(WAL, so concurrent runs share it); a file that changed in any of the three is hashed again. The index is
only a cache: when it cannot be opened or written (read-only or full disk), files are simply hashed.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from harness.io import sha256_file
from harness.paths import cache_root

_MEMORY: dict[tuple[str, int, int], str] = {}  # this process's hits, so a hot loop never touches sqlite
_LOCK = threading.Lock()
_CONNECTIONS: dict[tuple[str, int], sqlite3.Connection | None] = {}  # per (db path, thread)
INDEX_NAME = "file_hashes.sqlite"


def index_path() -> Path:
    return cache_root() / INDEX_NAME


def _connection() -> sqlite3.Connection | None:
    """This thread's connection to the index, or None when it cannot be used (then files are just hashed)."""
    db = index_path()
    key = (str(db), threading.get_ident())
    with _LOCK:
        if key in _CONNECTIONS:
            return _CONNECTIONS[key]
    conn: sqlite3.Connection | None
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(db, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
                     "sha256 TEXT)")
    except (OSError, sqlite3.Error):
        conn = None
    with _LOCK:
        _CONNECTIONS[key] = conn
    return conn


def _lookup(conn: sqlite3.Connection, key: tuple[str, int, int]) -> str | None:
    try:
        row = conn.execute("SELECT size, mtime_ns, sha256 FROM hashes WHERE path = ?", (key[0],)).fetchone()
    except sqlite3.Error:
        return None
    return row[2] if row and (row[0], row[1]) == key[1:] else None


def _store(conn: sqlite3.Connection, key: tuple[str, int, int], sha: str) -> None:
    try:
        conn.execute("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)", (*key, sha))
    except sqlite3.Error:
        pass  # a cache: a failed write costs a re-hash next time, nothing else


def file_sha256_cached(path: Path | str) -> str:
    """sha256 of the file at `path`, from the index when (path, size, mtime) are unchanged, else hashed now."""
    st = os.stat(path)
    seen = (str(path), st.st_size, st.st_mtime_ns)  # this process's key: one stat, no path resolution
    sha = _MEMORY.get(seen)
    if sha is not None:
        return sha
    path = Path(path).resolve()
    key = (str(path), st.st_size, st.st_mtime_ns)  # the index's key: the same file under any spelling
    conn = _connection()
    sha = _lookup(conn, key) if conn is not None else None
    if sha is None:
        sha = sha256_file(path)
        if conn is not None:
            _store(conn, key, sha)
    _MEMORY[seen] = sha
    return sha


def forget_process_memory() -> None:
    """Drop this process's in-memory hits (tests: a new HARNESS_CACHE, or a file rewritten within one mtime tick)."""
    _MEMORY.clear()
    with _LOCK:
        for conn in _CONNECTIONS.values():
            if conn is not None:
                conn.close()
        _CONNECTIONS.clear()

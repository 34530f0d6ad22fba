"""The results store: one SQLite file per output directory, readable with pandas.

Why SQLite and not Parquet: the harness appends a row per image while it runs and must survive
being killed mid-write. SQLite gives atomic transactions, upserts (so a resumed run never
duplicates a row) and concurrent readers, from the standard library, in one file. Parquet files
are immutable, so append-and-resume would mean many small files plus a compaction step.
Read it with `ResultsStore(dir).table("images")` or `pandas.read_sql("select * from images", con)`.

Only the main process writes (workers' rows are gathered to it), so the file is never written by
two processes at once, even across nodes on a shared filesystem.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from distar.core.errors import DistarError

STORE_FILENAME = "results.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,        -- unique per invocation of `distar eval`
    model TEXT NOT NULL,            -- registry name (or path:DIR)
    recipe_hash TEXT NOT NULL,      -- hash of everything that changes an image
    recipe_json TEXT NOT NULL,
    bench TEXT NOT NULL,
    bench_version TEXT NOT NULL,
    n_prompts_total INTEGER,        -- prompts in the benchmark
    n_images_expected INTEGER,      -- images this run was asked for (after --limit)
    started_at REAL, finished_at REAL,
    git_hash TEXT, versions_json TEXT, device TEXT, world_size INTEGER,
    batch_size INTEGER,
    latency_s_per_10 REAL,          -- seconds per 10 images after warm-up (paper's unit)
    peak_memory_bytes INTEGER,      -- cuda max_memory_allocated on GPU, peak RSS on CPU
    peak_memory_kind TEXT,          -- 'cuda_max_allocated' | 'cpu_peak_rss'
    status TEXT,                    -- 'running' | 'complete' | 'failed' | 'interrupted'
    n_images_timed INTEGER,         -- images the latency covers (a resume times only its batches)
    error TEXT                      -- why a run ended 'failed' / 'interrupted'
);
CREATE TABLE IF NOT EXISTS images (
    recipe_hash TEXT NOT NULL, bench TEXT NOT NULL, bench_version TEXT NOT NULL,
    prompt_index INTEGER NOT NULL, k INTEGER NOT NULL,
    model TEXT NOT NULL, prompt TEXT NOT NULL, seed INTEGER NOT NULL,
    path TEXT NOT NULL,             -- relative to the store directory
    sha256 TEXT NOT NULL,
    seconds REAL,                   -- wall time of its batch divided by the batch size
    batch_size INTEGER, device TEXT, run_id TEXT, created_at REAL,
    process_index INTEGER,          -- which accelerate process generated it
    PRIMARY KEY (recipe_hash, bench, bench_version, prompt_index, k)
);
CREATE TABLE IF NOT EXISTS scores (
    recipe_hash TEXT NOT NULL, bench TEXT NOT NULL, bench_version TEXT NOT NULL,
    prompt_index INTEGER NOT NULL, k INTEGER NOT NULL,
    metric TEXT NOT NULL,           -- e.g. 'pickscore', 'hpsv21'
    metric_version TEXT NOT NULL,   -- name+version+backbone+preprocessing, e.g. 'pickscore-v1/cos'
    value REAL NOT NULL,
    meta_json TEXT,
    created_at REAL,
    PRIMARY KEY (recipe_hash, bench, bench_version, prompt_index, k, metric, metric_version)
);
CREATE TABLE IF NOT EXISTS set_scores (  -- metrics of a whole image set (FID, KID)
    recipe_hash TEXT NOT NULL, bench TEXT NOT NULL, bench_version TEXT NOT NULL,
    metric TEXT NOT NULL, metric_version TEXT NOT NULL,
    value REAL NOT NULL, n_images INTEGER NOT NULL, meta_json TEXT, created_at REAL,
    PRIMARY KEY (recipe_hash, bench, bench_version, metric, metric_version)
);
-- What reports group a benchmark's prompts by, recorded by `distar eval` (evalsuite.generate)
-- so that tables and the gallery read the store alone, never the installed benchmarks.
CREATE TABLE IF NOT EXISTS benchmarks (
    bench TEXT NOT NULL, bench_version TEXT NOT NULL,
    description TEXT,
    n_prompts INTEGER NOT NULL,
    group_keys_json TEXT NOT NULL,  -- metadata keys tables break scores down by, e.g. ["style"]
    source TEXT,                    -- where the prompts came from (a file, a dataset)
    PRIMARY KEY (bench, bench_version)
);
CREATE TABLE IF NOT EXISTS prompts (  -- one row per prompt of a benchmark that has group keys
    bench TEXT NOT NULL, bench_version TEXT NOT NULL, prompt_index INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    meta_json TEXT NOT NULL,        -- e.g. {"category": "Animals", "challenge": "Basic"}
    PRIMARY KEY (bench, bench_version, prompt_index)
);
-- Per-image scores with the model that made each image (the name it was run under).
CREATE VIEW IF NOT EXISTS model_scores AS
    SELECT i.model, i.prompt, s.*
    FROM scores s JOIN images i USING (recipe_hash, bench, bench_version, prompt_index, k);
"""


_ADDED_RUN_COLUMNS = (("n_images_timed", "INTEGER"), ("error", "TEXT"))
# Migrations: a store written by an older distar gets the new tables (CREATE TABLE IF NOT
# EXISTS) and run columns (_ADDED_RUN_COLUMNS) the next time `distar eval` opens it for writing.
# A read-only report on a store that was never migrated sees no `benchmarks` table: it says so
# and names the fix (evalsuite.leaderboard.entries.read_prompt_meta).
TABLES = ("runs", "images", "scores", "set_scores", "model_scores", "benchmarks", "prompts")


@dataclass
class ImageRow:
    recipe_hash: str
    bench: str
    bench_version: str
    prompt_index: int
    k: int
    model: str
    prompt: str
    seed: int
    path: str
    sha256: str
    seconds: float | None = None
    batch_size: int | None = None
    device: str | None = None
    run_id: str | None = None
    created_at: float = field(default_factory=time.time)
    process_index: int = 0


@dataclass
class ScoreRow:
    recipe_hash: str
    bench: str
    bench_version: str
    prompt_index: int
    k: int
    metric: str
    metric_version: str
    value: float
    meta_json: str | None = None
    created_at: float = field(default_factory=time.time)


def _row_dict(row) -> dict[str, Any]:
    """A flat row dataclass as a dict (dataclasses.asdict deep-copies recursively: ~10x slower,
    and the harness stores a row per image)."""
    return {f.name: getattr(row, f.name) for f in fields(row)}


class StoreDamagedError(DistarError):
    """results.sqlite cannot be read as a database (truncated, overwritten, not SQLite)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(
            f"{path} is damaged ({reason}). The images under {path.parent / 'images'} are kept. "
            f"Fix: rerun the same `distar eval` command with --repair-store: it moves the damaged "
            f"file aside (to {path.name}.damaged-<time>) and rebuilds the image rows from the PNG "
            f"files on disk without regenerating them (latency and scores are measured again).")
        self.path = path


def repair_store(root: str | Path) -> Path | None:
    """Move a damaged results.sqlite (and its -wal / -shm) aside; returns the new name, or None
    when there is nothing to move. The next ResultsStore(root) starts an empty store, and the
    harness (run_eval(..., adopt_images=True)) re-records the images already on disk."""
    path = Path(root) / STORE_FILENAME
    if not path.exists():
        return None
    aside = path.with_name(f"{STORE_FILENAME}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    for suffix in ("-wal", "-shm"):
        extra = path.with_name(STORE_FILENAME + suffix)
        if extra.exists():
            os.replace(extra, aside.with_name(aside.name + suffix))
    os.replace(path, aside)
    return aside


# Store identity ---------------------------------------------------------------------------------
# Every store carries distar's application id and its schema version in the SQLite header
# (PRAGMA application_id / user_version). A file is checked before SQLite is let near it
# (SQLite replays a `-wal` beside the file on open, whichever database wrote that WAL), so a
# foreign, future-version or damaged file is refused and left byte-for-byte as it was.
APPLICATION_ID = 0x44495354  # 'DIST'
SCHEMA_VERSION = 1           # bump when the schema changes; older stores are migrated on write
_CORE_TABLES = {"runs", "images", "scores"}  # what a store made by an older distar always has
_SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreForeignError(DistarError):
    """results.sqlite (or the -wal beside it) is not a distar results store of a schema this
    distar knows."""

    def __init__(self, path: Path, reason: str, fix: str | None = None):
        super().__init__(
            f"{path} {reason}; distar left it untouched. Fix: "
            + (fix or f"point --out / --results at another folder, or move {path.name} "
                      f"(and any {path.name}-wal / -shm beside it) elsewhere."))
        self.path = path


def _columns(con: sqlite3.Connection, tables: Iterable[str]) -> set[str]:
    return {f"{t}.{r[1]}" for t in tables for r in con.execute(f"PRAGMA table_info({t})")}


def _required_columns() -> set[str]:
    """table.column for every column of the core tables (the run columns added later are
    migrated, not required)."""
    con = sqlite3.connect(":memory:")
    con.executescript(_SCHEMA)
    cols = _columns(con, _CORE_TABLES) - {f"runs.{c}" for c, _ in _ADDED_RUN_COLUMNS}
    con.close()
    return cols


def _identity(con: sqlite3.Connection) -> tuple[int, int, set[str]]:
    """(application_id, user_version, names of tables and views, and table.column of the core
    tables) of an open database."""
    app_id = con.execute("PRAGMA application_id").fetchone()[0]
    version = con.execute("PRAGMA user_version").fetchone()[0]
    names = {r[0] for r in con.execute(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
        "AND name NOT LIKE 'sqlite_%'")}
    return app_id, version, names | _columns(con, _CORE_TABLES & names)


def _judge(path: Path, app_id: int, version: int, names: set[str], where: str = "") -> bool:
    """Raise unless (app_id, version, names) describe a distar store this code can use (or an
    empty database); returns True when the store is an older distar's, to be stamped."""
    if app_id == APPLICATION_ID:
        if version > SCHEMA_VERSION:
            raise StoreForeignError(
                path, f"was written by a newer distar (store schema v{version}{where}; this "
                      f"distar knows up to v{SCHEMA_VERSION})",
                "upgrade distar (pip install -U distar, or pull the repository), or point "
                "--out / --results at another folder.")
        missing = sorted(_CORE_TABLES - names) or sorted(_required_columns() - names)
        if missing:
            raise StoreDamagedError(path, f"a distar store{where} without its table(s) or "
                                          f"column(s) {', '.join(missing[:6])}")
        return False
    if app_id != 0:
        raise StoreForeignError(path, f"belongs to another application (SQLite application id "
                                      f"{app_id:#x}{where}, not distar's {APPLICATION_ID:#x})")
    tables = {n for n in names if "." not in n}
    if not tables:
        return True  # an empty database: becomes a store
    foreign = tables - set(TABLES)
    if version != 0 or foreign or not _required_columns() <= names:
        what = ", ".join(sorted(foreign or tables)[:6])
        raise StoreForeignError(path, f"is a SQLite database of another application "
                                      f"(tables: {what}{where}), not a distar results store")
    return True  # made by a distar from before store identity: migrated on the next write


def _connect_immutable(path: Path) -> sqlite3.Connection:
    """The main file alone, read-only, no locks, no -wal / -shm created or read."""
    return sqlite3.connect(f"file:{path.resolve().as_posix()}?mode=ro&immutable=1", uri=True,
                           check_same_thread=False)


def inspect_store(path: Path) -> bool:
    """Check `path` (an existing results.sqlite) and the `-wal` beside it before SQLite opens
    them for real; raise StoreDamagedError / StoreForeignError naming the file, else return
    True when the store must be stamped (an older distar's, or empty). Writes nothing next to
    `path`: the main file is read with immutable=1, and a WAL is replayed into a copy in a
    temporary folder, so what SQLite would make of the pair is judged before it is made."""
    import shutil
    import tempfile

    with open(path, "rb") as fh:
        head = fh.read(100)
    if head and not head.startswith(_SQLITE_MAGIC):
        raise StoreDamagedError(path, "not a SQLite file")
    wal = path.with_name(path.name + "-wal")
    try:
        has_wal = wal.stat().st_size > 0
    except OSError:
        has_wal = False
    try:
        if head:
            con = _connect_immutable(path)
            try:
                stamp = _judge(path, *_identity(con))
            finally:
                con.close()
        else:
            stamp = True  # an empty file: SQLite makes it a database
        if not has_wal:
            return stamp
        with tempfile.TemporaryDirectory(prefix="distar-store-check-") as tmp:
            copy = Path(tmp) / path.name
            shutil.copyfile(path, copy)
            shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
            con = sqlite3.connect(copy)
            try:
                app_id, version, names = _identity(con)
                ok = con.execute("PRAGMA quick_check").fetchone()[0]
            finally:
                con.close()
        where = f", as the {wal.name} beside it would make it"
        if ok != "ok":
            raise StoreDamagedError(path, f"its {wal.name} does not fit it ({ok})")
        if head and app_id == 0 and not stamp:
            raise StoreForeignError(path, f"has a {wal.name} from another database beside it")
        return _judge(path, app_id, version, names, where)
    except sqlite3.DatabaseError as e:
        raise StoreDamagedError(path, str(e)) from None


class ResultsStore:
    """Thin typed access to `<root>/results.sqlite`.

    `readonly=True` (leaderboard, gallery) opens the file with SQLite's read-only mode: a
    report never writes, so it works on a store it may not modify. A file that is not a
    readable database raises StoreDamagedError (naming the file and the repair), whatever the
    operation."""

    def __init__(self, root: str | Path, create: bool = True, readonly: bool = False):
        self.root = Path(root)
        self.path = self.root / STORE_FILENAME
        self.readonly = readonly
        if not readonly:  # a linked results.sqlite must not carry the writes out of the folder
            from distar.core.validate import inside
            inside(self.root, self.path)
        stamp = inspect_store(self.path) if self.path.exists() else True
        if stamp and not readonly and not create:
            create = True  # an older distar's store: migrate before the first write
        if create and not readonly:
            self.root.mkdir(parents=True, exist_ok=True)
            with self._guard():
                con = self._connect()
                # WAL: readers (other ranks, a leaderboard) never block the writer. The mode is
                # stored in the file, so only the creating process needs to set it.
                con.execute("PRAGMA journal_mode=WAL")
                with con:
                    con.executescript(_SCHEMA)
                    have = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
                    for col, kind in _ADDED_RUN_COLUMNS:  # stores written before these existed
                        if col not in have:
                            con.execute(f"ALTER TABLE runs ADD COLUMN {col} {kind}")
                    con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif readonly:
            with self._guard():  # fail now, naming the file, not in the middle of a report
                self._connect().execute("SELECT count(*) FROM sqlite_master").fetchone()

    @contextmanager
    def _guard(self):
        """sqlite3 errors that mean 'this file is damaged / not writable' -> one clear error."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            msg = str(e)
            if isinstance(e, sqlite3.OperationalError) and "locked" in msg:
                raise DistarError(f"{self.path} stayed locked by another process for 60 s ({msg}). "
                                  "Fix: wait for the other `distar eval` on this --out to finish, "
                                  "or use another --out.") from None
            if isinstance(e, sqlite3.OperationalError) and ("readonly" in msg or "read-only" in msg
                                                            or "unable to open" in msg):
                raise DistarError(f"Cannot open {self.path} for writing ({msg}). Fix: make "
                                  f"{self.root} writable, or use another --out.") from None
            if isinstance(e, sqlite3.OperationalError) and "no such table" in msg:
                raise StoreDamagedError(self.path, f"{msg}: not a distar results store") from None
            raise StoreDamagedError(self.path, msg) from None
        except pd.errors.DatabaseError as e:  # pandas wraps the sqlite3 error of a read
            raise StoreDamagedError(self.path, str(e).splitlines()[-1][-300:]) from None

    def _connect(self) -> sqlite3.Connection:
        """One connection per store object, opened on first use: opening and closing per batch
        cost ~8 ms (a WAL checkpoint on close)."""
        if getattr(self, "_con", None) is None:
            self._con = self._open()
        return self._con

    def close(self) -> None:
        if getattr(self, "_con", None) is not None:
            self._con.close()
            self._con = None

    def __del__(self):
        self.close()

    def _open(self) -> sqlite3.Connection:
        if self.readonly:
            uri = f"file:{self.path.resolve().as_posix()}?mode=ro"
            return sqlite3.connect(uri, uri=True, timeout=60, check_same_thread=False)
        con = sqlite3.connect(self.path, timeout=60, check_same_thread=False)  # waits up to 60 s on a busy lock
        # WAL + NORMAL: a commit survives a killed process (what resume relies on) without an
        # fsync per batch; after a power loss the last batches may be re-generated, never corrupt.
        con.execute("PRAGMA synchronous=NORMAL")
        return con

    def _upsert(self, table: str, rows: Iterable[dict[str, Any]]) -> int:
        rows = list(rows)
        if not rows:
            return 0
        cols = list(rows[0])
        sql = (f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) "
               f"VALUES ({', '.join('?' for _ in cols)})")
        with self._guard(), self._connect() as con:  # one transaction: all rows or none
            con.executemany(sql, [tuple(r[c] for c in cols) for r in rows])
        return len(rows)

    # Writes -----------------------------------------------------------------------------
    def add_images(self, rows: Iterable[ImageRow]) -> int:
        return self._upsert("images", (_row_dict(r) for r in rows))

    def add_scores(self, rows: Iterable[ScoreRow]) -> int:
        return self._upsert("scores", (_row_dict(r) for r in rows))

    def add_set_score(self, *, recipe_hash: str, bench: str, bench_version: str, metric: str,
                      metric_version: str, value: float, n_images: int,
                      meta: dict | None = None) -> None:
        self._upsert("set_scores", [dict(
            recipe_hash=recipe_hash, bench=bench, bench_version=bench_version, metric=metric,
            metric_version=metric_version, value=float(value), n_images=int(n_images),
            meta_json=json.dumps(meta or {}, sort_keys=True), created_at=time.time())])

    def add_benchmark(self, bench: str, bench_version: str, description: str,
                      group_keys: Sequence[str], prompts: Iterable[tuple[int, str, dict]],
                      source: str = "") -> bool:
        """Record a benchmark version's prompt metadata once (the report side reads it back
        with `benchmark_meta`). `prompts`: (index, text, metadata) for every prompt; their rows
        are stored only when the benchmark has group keys (COCO-30K's 30k captions carry
        nothing to group by). Returns False when this version was already recorded."""
        with self._guard():
            done = self._connect().execute(
                "SELECT 1 FROM benchmarks WHERE bench=? AND bench_version=?",
                (bench, bench_version)).fetchone()
        if done:
            return False
        prompts = list(prompts)
        keys = [str(k).lower() for k in group_keys]
        rows = [dict(bench=bench, bench_version=bench_version, prompt_index=int(i), prompt=text,
                     meta_json=json.dumps({str(k).lower(): v for k, v in (meta or {}).items()},
                                          sort_keys=True))
                for i, text, meta in prompts] if keys else []
        bench_row = dict(bench=bench, bench_version=bench_version, description=description,
                         n_prompts=len(prompts), group_keys_json=json.dumps(keys), source=source)
        with self._guard(), self._connect() as con:  # one transaction: the prompts, then the
            for table, rs in (("prompts", rows), ("benchmarks", [bench_row])):  # marker row
                if rs:
                    cols = list(rs[0])
                    con.executemany(f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) VALUES "
                                    f"({', '.join('?' for _ in cols)})",
                                    [tuple(r[c] for c in cols) for r in rs])
        return True

    def upsert_run(self, **run: Any) -> None:
        self._upsert("runs", [run])

    def mark_dead_runs(self) -> int:
        """Runs still 'running' whose process is gone (killed: SIGKILL, OOM, power loss) become
        'failed'. Call only while holding the folder's lock (distar.core.runlock.out_lock): then
        no live process can be writing one of them."""
        with self._guard(), self._connect() as con:
            cur = con.execute("UPDATE runs SET status='failed', error=coalesce(error, "
                              "'the process ended without finishing (killed?)') "
                              "WHERE status='running'")
            return cur.rowcount

    # Reads ------------------------------------------------------------------------------
    def has_table(self, name: str) -> bool:
        """Whether the file has `name` (a store from an older distar, opened read-only, may
        lack the newer tables)."""
        with self._guard():
            return self._connect().execute(
                "SELECT 1 FROM sqlite_master WHERE name=?", (name,)).fetchone() is not None

    def table(self, name: str, where: str = "", params: tuple = ()) -> pd.DataFrame:
        if name not in TABLES:
            raise ValueError(f"Unknown table '{name}'")
        with self._guard():
            return pd.read_sql_query(f"SELECT * FROM {name} {where}", self._connect(), params=params)

    def images(self, recipe_hash: str, bench: str, bench_version: str) -> pd.DataFrame:
        return self.table("images", "WHERE recipe_hash=? AND bench=? AND bench_version=?",
                          (recipe_hash, bench, bench_version))

    def scored_keys(self, recipe_hash: str, bench: str, bench_version: str, metric: str,
                    metric_version: str) -> set[tuple[int, int]]:
        """(prompt_index, k) pairs already scored with this exact metric version."""
        df = self.table("scores", "WHERE recipe_hash=? AND bench=? AND bench_version=? "
                        "AND metric=? AND metric_version=?",
                        (recipe_hash, bench, bench_version, metric, metric_version))
        return set(zip(df.prompt_index.tolist(), df.k.tolist()))


# Row-level merge: parts of one evaluation made by separate processes or machines -------------
_PRIMARY_KEYS = {
    "runs": ("run_id",),
    "images": ("recipe_hash", "bench", "bench_version", "prompt_index", "k"),
    "scores": ("recipe_hash", "bench", "bench_version", "prompt_index", "k", "metric", "metric_version"),
    "set_scores": ("recipe_hash", "bench", "bench_version", "metric", "metric_version"),
    "benchmarks": ("bench", "bench_version"),
    "prompts": ("bench", "bench_version", "prompt_index"),
}


def merge_store(src: str | Path, dst: str | Path) -> dict[str, int]:
    """Copy the store at `src` into the one at `dst` (created if needed): its image files, then
    its rows, so a row never points at a missing file. Rows `dst` already has are kept, except
    scores and set scores, where the more recently computed row wins (a rescored part replaces
    the old value). Idempotent: merging the same part again changes nothing, so a merge killed
    half-way is finished by running it again. An image whose file does not match its row's
    sha256 is not merged (its row is dropped and counted). Hold both folders' locks
    (distar.core.runlock.out_lock) or otherwise know that nothing writes them.
    Returns {table: rows merged, 'files': image files copied, 'damaged': images skipped}."""
    import hashlib

    from distar.core.atomic import write_bytes

    source = ResultsStore(src, readonly=True)
    target = ResultsStore(dst)
    have = target.table("images")[["recipe_hash", "bench", "bench_version", "prompt_index", "k"]]
    have = set(map(tuple, have.itertuples(index=False)))
    counts = {"files": 0, "damaged": 0}
    images = source.table("images")
    keep = []
    for row in images.itertuples(index=False):
        key = (row.recipe_hash, row.bench, row.bench_version, row.prompt_index, row.k)
        path = target.root / row.path
        if key in have and path.exists():
            keep.append(False)  # already merged (or made in dst): the dst row stays
            continue
        try:
            data = (source.root / row.path).read_bytes()
        except OSError:
            data = b""
        if hashlib.sha256(data).hexdigest() != row.sha256:
            counts["damaged"] += 1
            keep.append(False)
            continue
        write_bytes(path, data, fsync=False)  # rows are committed after their files
        counts["files"] += 1
        keep.append(True)
    new_images = images[keep] if len(images) else images
    newer = "WHERE excluded.created_at > {t}.created_at"
    with target._guard(), target._connect() as con:  # every row in one transaction
        for table, cols in _PRIMARY_KEYS.items():
            df = new_images if table == "images" else source.table(table)
            if not len(df):
                counts[table] = 0
                continue
            names = list(df.columns)
            sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)}) "
            if table in ("scores", "set_scores"):
                sets = ", ".join(f"{c}=excluded.{c}" for c in names if c not in cols)
                sql += f"ON CONFLICT ({', '.join(cols)}) DO UPDATE SET {sets} {newer.format(t=table)}"
            else:
                sql += f"ON CONFLICT ({', '.join(cols)}) DO NOTHING"
            rows = [tuple(None if pd.isna(v) else (v.item() if hasattr(v, "item") else v) for v in r)
                    for r in df.itertuples(index=False)]
            counts[table] = con.executemany(sql, rows).rowcount
    source.close()
    target.close()
    return counts

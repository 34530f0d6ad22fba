"""Store identity: a results.sqlite carries distar's application id and schema version; a
foreign, future-version or damaged file, or a -wal beside it written by another database, is
refused with one clear line by every command, and left byte-for-byte as it was."""
import hashlib
import shutil
import sqlite3

import pytest

from evalsuite.store import (APPLICATION_ID, SCHEMA_VERSION, STORE_FILENAME, ResultsStore,
                             StoreForeignError)
from fault_helpers import invoke, one_clear_error

EVAL = ["eval", "--model", "tiny_sdxl", "--bench", "tiny", "--limit", "2", "--batch-size", "2"]


def _hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.name.startswith(STORE_FILENAME)}


def _commands(out, tmp_path):
    return (EVAL + ["--out", out], ["leaderboard", "--results", out, "--out", tmp_path / "lb"],
            ["gallery", "--bench", "tiny", "--results", out, "--out", tmp_path / "gal"])


@pytest.fixture(scope="module")
def good_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("good")
    r = invoke(*EVAL, "--out", out)
    assert r.exit_code == 0, r.output
    assert not (out / (STORE_FILENAME + "-wal")).exists()
    return out


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _edited_copy(src, dst, *sql):
    """A copy of the store at src with the statements run on it (a planted fault)."""
    _copy(src, dst)
    con = sqlite3.connect(dst / STORE_FILENAME)
    for statement in sql:
        con.execute(statement)
    con.commit()
    con.close()
    return dst


def _other_wal_database(path, *sql):
    """Another application's WAL-mode database with the statements in its -wal (no checkpoint),
    left open: its -wal and -shm stay beside it until the connection closes."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_autocheckpoint=0")
    with con:
        for statement in sql:
            con.execute(statement)
    return con


def _foreign_wal(tmp_path, into):
    """A -wal written by another application's database (left behind by a killed process),
    placed beside `into`'s store under the store's name."""
    con = _other_wal_database(tmp_path / "other.db", "CREATE TABLE accounts (id INTEGER, owner TEXT)",
                              "INSERT INTO accounts VALUES (1, 'x')")
    shutil.copyfile(tmp_path / "other.db-wal", into / (STORE_FILENAME + "-wal"))
    con.close()


def test_a_store_carries_distars_identity(good_store):
    con = sqlite3.connect(f"file:{good_store / STORE_FILENAME}?mode=ro", uri=True)
    assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    con.close()


def test_a_stale_wal_from_another_database_is_refused_and_left_untouched(good_store, tmp_path):
    out = _copy(good_store, tmp_path / "out")
    _foreign_wal(tmp_path, out)
    before = _hashes(out)
    for cmd in _commands(out, tmp_path):
        one_clear_error(invoke(*cmd), str(out / STORE_FILENAME), "-wal")
        assert _hashes(out) == before
    (out / (STORE_FILENAME + "-wal")).unlink()
    assert len(ResultsStore(out, readonly=True).table("images")) == 2


def test_a_stale_wal_from_another_distar_store_is_refused(good_store, tmp_path):
    """A WAL of another store whose header stamps a different schema (a newer distar)."""
    out = _copy(good_store, tmp_path / "out")
    other = tmp_path / "other"
    ResultsStore(other).close()
    con = sqlite3.connect(other / STORE_FILENAME)
    con.execute("PRAGMA wal_autocheckpoint=0")
    with con:
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    shutil.copyfile(other / (STORE_FILENAME + "-wal"), out / (STORE_FILENAME + "-wal"))
    con.close()
    before = _hashes(out)
    one_clear_error(invoke(*EVAL, "--out", out), "newer distar", "-wal")
    assert _hashes(out) == before


@pytest.mark.parametrize("kind", ["foreign", "foreign-runs", "future", "other-app-id"])
def test_foreign_and_future_stores_are_refused_and_left_untouched(tmp_path, kind):
    out = tmp_path / "out"
    out.mkdir()
    con = sqlite3.connect(out / STORE_FILENAME)
    if kind == "foreign":
        con.execute("CREATE TABLE invoices (id INTEGER, total REAL)")
    elif kind == "foreign-runs":  # another app's table named like ours
        con.execute("CREATE TABLE runs (id INTEGER, km REAL)")
    elif kind == "future":
        ResultsStore(out).close()
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    else:
        con.execute("PRAGMA application_id = 1234")
        con.execute("CREATE TABLE runs (id INTEGER)")
    con.commit()
    con.close()
    before = _hashes(out)
    needle = "newer distar" if kind == "future" else "another application"
    for cmd in _commands(out, tmp_path):
        one_clear_error(invoke(*cmd), str(out / STORE_FILENAME), needle, "Fix:")
        assert _hashes(out) == before, cmd[0]
    with pytest.raises(StoreForeignError):
        ResultsStore(out, create=False)


def test_a_store_of_an_older_distar_is_migrated(good_store, tmp_path):
    out = _edited_copy(good_store, tmp_path / "out", "PRAGMA application_id = 0", "PRAGMA user_version = 0")
    r = invoke("leaderboard", "--results", out, "--out", tmp_path / "lb")  # read-only: works
    assert r.exit_code == 0, r.output
    r = invoke(*EVAL, "--out", out)
    assert r.exit_code == 0, r.output
    con = sqlite3.connect(out / STORE_FILENAME)
    assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    con.close()


def test_a_store_missing_a_table_is_damaged_not_recreated(good_store, tmp_path):
    out = _edited_copy(good_store, tmp_path / "out", "DROP VIEW model_scores", "DROP TABLE scores")
    before = _hashes(out)
    for cmd in _commands(out, tmp_path):
        one_clear_error(invoke(*cmd), str(out / STORE_FILENAME), "scores", "--repair-store")
        assert _hashes(out) == before


@pytest.mark.parametrize("damage", [
    "ALTER TABLE runs DROP COLUMN status",
    "ALTER TABLE images RENAME COLUMN path TO p",
])
def test_a_store_missing_a_column_is_one_clear_line(good_store, tmp_path, damage):
    out = _edited_copy(good_store, tmp_path / "out", "DROP VIEW model_scores", damage)
    for cmd in _commands(out, tmp_path):
        one_clear_error(invoke(*cmd), str(out / STORE_FILENAME), "column")


def test_a_failing_read_is_one_clear_line(good_store, tmp_path):
    """pandas wraps sqlite's error in its own DatabaseError: still one line naming the file."""
    out = _copy(good_store, tmp_path / "out")
    store = ResultsStore(out, readonly=True)
    store._connect().execute("SELECT 1")
    from evalsuite.store import StoreDamagedError
    with pytest.raises(StoreDamagedError, match=STORE_FILENAME):
        store.table("runs", "WHERE nosuchcolumn = 1")


def test_a_stale_shm_from_another_database_changes_nothing(good_store, tmp_path):
    """The -shm is only an index of the -wal, rebuilt by the first process that opens the
    store: with no -wal beside it, another database's -shm cannot bring anything in."""
    out = _copy(good_store, tmp_path / "out")
    con = _other_wal_database(tmp_path / "other.db", "CREATE TABLE accounts (id INTEGER)")
    shutil.copyfile(tmp_path / "other.db-shm", out / (STORE_FILENAME + "-shm"))
    con.close()
    r = invoke("leaderboard", "--results", out, "--out", tmp_path / "lb")
    assert r.exit_code == 0, r.output
    store = ResultsStore(out, readonly=True)
    assert len(store.table("images")) == 2 and not store.has_table("accounts")

"""evalsuite.store.merge_store: parts of one evaluation (made by separate processes or machines)
merged into one store: files before rows, existing rows kept, newer scores win, idempotent."""
import hashlib
import time

from evalsuite.store import ImageRow, ResultsStore, ScoreRow, merge_store


def _part(root, model, prompts, value, damaged=()):
    store = ResultsStore(root)
    rows = []
    for p in prompts:
        data = f"{model}-{p}".encode()
        rel = f"images/{model}/{p:05d}_0.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"bad" if p in damaged else data)
        rows.append(ImageRow(recipe_hash=model, bench="b", bench_version="1", prompt_index=p, k=0,
                             model=model, prompt=f"prompt {p}", seed=p, path=rel,
                             sha256=hashlib.sha256(data).hexdigest()))
    store.add_images(rows)
    store.add_scores(ScoreRow(model, "b", "1", p, 0, "m", "m-v1", value + p) for p in prompts)
    store.add_set_score(recipe_hash=model, bench="b", bench_version="1", metric="fd", metric_version="fd-v1",
                        value=value, n_images=len(prompts))
    store.upsert_run(run_id=f"run-{model}", model=model, recipe_hash=model, recipe_json="{}", bench="b",
                     bench_version="1", status="complete")
    store.close()


def test_merge_copies_files_and_rows_and_is_idempotent(tmp_path):
    _part(tmp_path / "a", "alpha", [0, 1, 2], 10.0)
    _part(tmp_path / "b", "beta", [0, 1], 20.0, damaged=(1,))
    dst = tmp_path / "all"
    ca = merge_store(tmp_path / "a", dst)
    cb = merge_store(tmp_path / "b", dst)
    assert (ca["files"], ca["images"], ca["scores"], ca["damaged"]) == (3, 3, 3, 0)
    assert (cb["files"], cb["images"], cb["damaged"]) == (1, 1, 1)  # beta's prompt 1 is damaged
    store = ResultsStore(dst, readonly=True)
    images = store.table("images")
    assert sorted(zip(images.model, images.prompt_index)) == [("alpha", 0), ("alpha", 1), ("alpha", 2), ("beta", 0)]
    for row in images.itertuples():
        assert hashlib.sha256((dst / row.path).read_bytes()).hexdigest() == row.sha256
    assert sorted(store.table("set_scores").value) == [10.0, 20.0]
    assert set(store.table("runs").run_id) == {"run-alpha", "run-beta"}
    again = merge_store(tmp_path / "a", dst)
    assert again["files"] == 0 and again["images"] == 0
    assert len(ResultsStore(dst, readonly=True).table("scores")) == 3 + 2


def test_merge_keeps_existing_rows_but_newer_scores_win(tmp_path):
    _part(tmp_path / "a", "alpha", [0], 1.0)
    dst = tmp_path / "all"
    merge_store(tmp_path / "a", dst)
    time.sleep(0.01)
    _part(tmp_path / "a2", "alpha", [0], 5.0)  # the same image key rescored later
    merge_store(tmp_path / "a2", dst)
    store = ResultsStore(dst, readonly=True)
    assert store.table("scores").value.tolist() == [5.0]
    assert store.table("set_scores").value.tolist() == [5.0]
    merge_store(tmp_path / "a", dst)  # the older part again: nothing goes back
    assert ResultsStore(dst, readonly=True).table("scores").value.tolist() == [5.0]

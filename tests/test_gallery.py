"""The static gallery: page structure, offline self-containment, and a real render in headless
Chromium (images load, solid-colour images appear in the right columns, the category filter)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import evalsuite  # noqa: F401  (patches torchvision before anything imports it)
import numpy as np
import pytest
from PIL import Image

from distar.core.errors import DistarError
from evalsuite.gallery import write_gallery
from evalsuite.store import ImageRow, ResultsStore, ScoreRow

RED, BLUE, GREEN = (220, 30, 30), (30, 30, 220), (30, 200, 30)
META = {0: {"category": "Animals", "challenge": "Basic"},
        1: {"category": "Animals", "challenge": "Complex"},
        2: {"category": "Arts", "challenge": "Basic"}}
WINDOW = (1400, 1100)


def build_store(root: Path) -> ResultsStore:
    """Three prompts; models red / blue / green draw 64x64 images of one solid colour each."""
    store = ResultsStore(root)
    # The prompts' metadata, as `distar eval` records it with its runs.
    store.add_benchmark("parti", "1-test", "parti (test)", ("category", "challenge"),
                        [(i, f"a <b>prompt</b> {i}", META[i]) for i in range(3)])
    for model, colour in (("red_model", RED), ("blue_model", BLUE), ("green_model", GREEN)):
        rh = f"{model[:4]}0000000000000"
        rows, scores = [], []
        for i in range(3):
            rel = f"images/{rh}/parti/{i:05d}_0.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (64, 64), colour).save(root / rel)
            rows.append(ImageRow(recipe_hash=rh, bench="parti", bench_version="1-test",
                                 prompt_index=i, k=0, model=model, prompt=f"a <b>prompt</b> {i}",
                                 seed=i, path=rel, sha256="0" * 64, created_at=1.0))
            scores.append(ScoreRow(recipe_hash=rh, bench="parti", bench_version="1-test",
                                   prompt_index=i, k=0, metric="pickscore",
                                   metric_version="PickScore-v1 cos|ViT-H-14|224",
                                   value=0.2 + i / 1000 + (model == "red_model") / 100,
                                   # how the metric is shown, as its MetricInfo records it
                                   meta_json=json.dumps({"info": {"label": "PickScore",
                                                                  "decimals": 4}})))
        store.add_images(rows)
        store.add_scores(scores)
    return store


@pytest.fixture
def gallery(tmp_path, monkeypatch):
    build_store(tmp_path / "results")
    page = write_gallery(tmp_path / "results", "parti", ["blue_model", "red_model"],
                         tmp_path / "gallery")
    return tmp_path, page


def test_gallery_page_is_self_contained(gallery):
    tmp_path, page = gallery
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # no CDN, nothing fetched
    srcs = re.findall(r'<img src="([^"]+)"', text)
    assert len(srcs) == 6  # 3 prompts x 2 selected models; green not selected
    for src in srcs:
        assert not src.startswith("/") and (page.parent / src).is_file()
    # Columns in the order asked for; prompt text escaped; scores with their version on hover.
    assert text.index(">blue_model<") < text.index(">red_model<")
    assert "green_model" not in text
    assert "a &lt;b&gt;prompt&lt;/b&gt; 0" in text
    assert 'title="pickscore = PickScore-v1 cos|ViT-H-14|224">PickScore 0.2100<' in text
    assert '<select data-key="category"><option value="">all</option>' \
           '<option value="Animals">Animals</option><option value="Arts">Arts</option>' in text
    assert text.count('data-g-category="Animals"') == 2
    # Per-model means under each column title; each thumbnail links to its full image.
    assert '>PickScore 0.2010</div></th>' in text  # blue: mean of 0.200, 0.201, 0.202
    hrefs = re.findall(r'<a href="([^"]+)"><img', text)
    assert len(hrefs) == 6 and all((page.parent / h).resolve().is_file() for h in hrefs)
    assert all(Path(h).parts[-4] == "images" for h in hrefs)
    # The folder works without the results directory (thumbnails; the links need it).
    shutil.rmtree(tmp_path / "results")
    assert all((page.parent / s).is_file() for s in srcs)


def test_gallery_rewrite_is_identical_and_prunes(gallery, monkeypatch):
    tmp_path, page = gallery
    before = page.read_bytes()
    thumbs = sorted(p.name for p in (page.parent / "img").iterdir())
    write_gallery(tmp_path / "results", "parti", ["blue_model", "red_model"], page.parent)
    assert page.read_bytes() == before
    write_gallery(tmp_path / "results", "parti", ["red_model"], page.parent)
    assert len(list((page.parent / "img").iterdir())) == 1 < len(thumbs)  # blue pruned


def test_gallery_errors(tmp_path, monkeypatch):
    with pytest.raises(DistarError, match="No results store"):
        write_gallery(tmp_path / "nothing", "parti", None, tmp_path / "g")
    build_store(tmp_path / "results")
    with pytest.raises(DistarError, match="Models with images: blue_model, green_model"):
        write_gallery(tmp_path / "results", "parti", ["nope"], tmp_path / "g")
    with pytest.raises(DistarError, match="Benchmarks with images: parti"):
        write_gallery(tmp_path / "results", "coco30k", None, tmp_path / "g")
    (tmp_path / "results" / "images/red_0000000000000/parti/00001_0.png").unlink()
    page = write_gallery(tmp_path / "results", "parti", None, tmp_path / "g")
    assert page.read_text().count("file missing") == 1


# Headless Chromium ------------------------------------------------------------------------------
def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe:
        return exe
    msg = "chromium not installed (apt-get install -y chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def run_chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on a file:// URL with JS run and time for images to load; offline."""
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--hide-scrollbars", "--force-device-scale-factor=1",
           f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
           "--virtual-time-budget=5000", *args, url]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert res.returncode == 0, res.stderr[-2000:]
    return res


def _body_attr(dom: str, name: str) -> str:
    m = re.search(rf'<body[^>]*\s{name}="([^"]*)"', dom)
    assert m, f"no {name} on <body> in the rendered DOM"
    return m.group(1)


def test_gallery_renders_in_chromium(gallery):
    tmp_path, page = gallery
    url = page.resolve().as_uri()
    dom = run_chromium(url, tmp_path / "profile", "--dump-dom").stdout
    assert _body_attr(dom, "data-total") == "6"
    assert _body_attr(dom, "data-loaded") == "6"   # every <img> decoded with naturalWidth > 0
    assert _body_attr(dom, "data-broken") == "0"
    assert _body_attr(dom, "data-shown") == "3"
    assert "3 of 3 prompts shown" in dom
    assert int(_body_attr(dom, "data-table-width")) >= WINDOW[0] - 20  # the window's width

    # The filter, set from the URL fragment: only the Arts prompt stays visible.
    dom = run_chromium(url + "#category=Arts", tmp_path / "profile", "--dump-dom").stdout
    assert _body_attr(dom, "data-shown") == "1"
    assert len(re.findall(r"<tr [^>]*\bhidden\b", dom)) == 2
    assert "1 of 3 prompts shown" in dom

    # The picture: blue images in the first model column, red in the second, one per row.
    shot = tmp_path / "shot.png"
    run_chromium(url, tmp_path / "profile", f"--screenshot={shot}")
    px = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert px.shape[:2] == (WINDOW[1], WINDOW[0])

    def mask(c):
        return (np.abs(px - np.array(c)).max(axis=2) < 40)

    red, blue, green = mask(RED), mask(BLUE), mask(GREEN)
    assert not green.any()
    for m in (red, blue):  # each colour shown at the page's thumbnail size (192 px)
        cols = np.flatnonzero(m.any(axis=0))
        assert 180 <= cols.max() - cols.min() + 1 <= 200
    assert np.flatnonzero(blue.any(axis=0)).max() < np.flatnonzero(red.any(axis=0)).min()
    # Three separate runs of red rows: one image per prompt row (all three fit the window).
    rows = red.any(axis=1).astype(int)
    assert np.count_nonzero(np.diff(rows) == 1) + rows[0] == 3

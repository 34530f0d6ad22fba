"""A static side-by-side gallery (`distar gallery`): one row per prompt, one column per model,
each image's scores under it, and a filter per prompt category.

The page is self-contained: CSS and JS are inline (no CDN), and every image is a JPEG thumbnail
copied into `<out>/img/`, named by the hash of the source file, so the folder works offline,
moved anywhere, without the results directory. Filters are mirrored in the URL fragment
(`index.html#category=Animals`), so a filtered view can be shared or opened directly. After the
images settle the page writes `data-loaded` / `data-broken` (image counts) on <body>, which the
headless-browser test reads.
"""
from __future__ import annotations

import hashlib
import html
import io
import json
import os
import re
from pathlib import Path

import pandas as pd
from PIL import Image

from distar.core import atomic
from distar.core.errors import DistarError
from distar.core.validate import inside
from evalsuite.leaderboard.entries import metric_shown, read_prompt_meta
from evalsuite.leaderboard.markdown import score_text
from evalsuite.store import STORE_FILENAME, ResultsStore

THUMB = 256           # longest side of the copied thumbnails, pixels
JPEG_QUALITY = 90
PAGE = "index.html"
IMG_DIR = "img"


MANIFEST = ".distar-gallery.json"   # the files this command wrote into --out: the only ones it deletes


def _thumbnail(src: Path, img_dir: Path, created: set[str]) -> str | None:
    """Copy `src` as a JPEG thumbnail named by its content hash; returns the relative path, or
    None when the image file is missing or cannot be decoded. Names it writes go to `created`."""
    try:
        data = src.read_bytes()
    except OSError:
        return None
    name = f"{hashlib.sha256(data).hexdigest()[:24]}_{THUMB}.jpg"
    dst = img_dir / name
    if not dst.exists():
        try:
            with Image.open(src) as im:
                im = im.convert("RGB")
                im.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=False)
        except (OSError, ValueError):  # a damaged image: shown as missing, the page still builds
            return None
        atomic.write_bytes(dst, buf.getvalue())
        created.add(name)
    return f"{IMG_DIR}/{name}"


def _safe_key(key: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-") or "key"


def _columns(images: pd.DataFrame, runs: pd.DataFrame, models: list[str] | None
             ) -> list[tuple[str, str]]:
    """(recipe_hash, label) per column. A model is matched by the name given to `distar eval`
    (images.model) or its recipe name; one name with several recipes gives several columns."""
    names: dict[str, set[str]] = {}
    labels: dict[str, str] = {}
    for rh, model in sorted(set(zip(images.recipe_hash, images.model))):
        r = runs[runs.recipe_hash == rh].sort_values(["started_at", "run_id"])
        recipe = json.loads(r.recipe_json.iloc[-1]) if len(r) and r.recipe_json.iloc[-1] else {}
        label = str(recipe.get("label") or recipe.get("name") or model)
        names[rh] = {str(model), label, str(recipe.get("name") or model)}
        labels[rh] = label
    counts: dict[str, int] = {}
    for label in labels.values():
        counts[label] = counts.get(label, 0) + 1
    for rh in labels:
        if counts[labels[rh]] > 1:
            labels[rh] += f" #{rh[:8]}"
    if not models:
        return sorted(((rh, lab) for rh, lab in labels.items()), key=lambda c: (c[1], c[0]))
    cols = []
    for m in models:
        match = sorted(rh for rh, n in names.items() if m in n)
        if not match:
            choices = ", ".join(sorted({n for ns in names.values() for n in ns}))
            raise DistarError(f"No images of model '{m}' on this benchmark. "
                              f"Models with images: {choices}")
        cols += [(rh, labels[rh]) for rh in match if (rh, labels[rh]) not in cols]
    return cols


_CSS = """
:root { --thumb: 192px; font-family: system-ui, -apple-system, "Segoe UI", sans-serif; }
body { margin: 0; background: #fafafa; color: #222; }
header { position: sticky; top: 0; z-index: 2; background: #fff; border-bottom: 1px solid #ddd;
         padding: 8px 12px; }
h1 { font-size: 18px; margin: 0 0 4px 0; }
header p { margin: 2px 0; font-size: 12px; color: #555; }
.filters { display: flex; gap: 12px; align-items: center; font-size: 13px; margin-top: 6px; }
table { border-collapse: collapse; margin: 8px 0; width: 100%; }
th, td { border: 1px solid #e2e2e2; padding: 4px; vertical-align: top; background: #fff; }
th { font-size: 13px; position: sticky; top: 0; z-index: 1; background: #f3f3f3; }
td.idx { font-size: 11px; color: #888; text-align: right; }
td.prompt { max-width: 260px; font-size: 13px; }
td.prompt .meta { font-size: 11px; color: #777; margin-top: 4px; }
th .means { font-weight: normal; font-size: 11px; color: #444; margin-top: 3px; }
td.cell img { display: block; width: var(--thumb); height: var(--thumb); object-fit: contain;
              background: #eee; }
td.cell .scores { font-size: 11px; color: #333; margin-top: 3px; width: var(--thumb); }
td.cell .missing { width: var(--thumb); height: var(--thumb); display: flex;
                   align-items: center; justify-content: center; color: #999; font-size: 12px; }
tr[hidden] { display: none; }
"""

_JS = """
(function () {
  const rows = Array.from(document.querySelectorAll('tbody tr'));
  const selects = Array.from(document.querySelectorAll('select[data-key]'));
  const shown = document.getElementById('shown');
  const header = document.querySelector('header');
  function stick() {  // column titles stay visible under the sticky header
    document.querySelectorAll('thead th').forEach(th => { th.style.top = header.offsetHeight + 'px'; });
  }
  stick();
  window.addEventListener('resize', stick);
  function apply(updateHash) {
    const want = {};
    selects.forEach(s => { if (s.value) want[s.dataset.key] = s.value; });
    let n = 0;
    rows.forEach(tr => {
      const ok = Object.keys(want).every(k => tr.getAttribute('data-g-' + k) === want[k]);
      tr.hidden = !ok;
      if (ok) n++;
    });
    shown.textContent = n + ' of ' + rows.length + ' prompts shown';
    document.body.dataset.shown = String(n);
    if (updateHash) {
      const h = new URLSearchParams(want).toString();
      try { history.replaceState(null, '', h ? '#' + h : location.pathname); }
      catch (e) { /* some file:// contexts refuse; the filter still works */ }
    }
  }
  const initial = new URLSearchParams(location.hash.slice(1));
  selects.forEach(s => {
    const v = initial.get(s.dataset.key);
    if (v !== null && Array.from(s.options).some(o => o.value === v)) s.value = v;
    s.addEventListener('change', () => apply(true));
  });
  apply(false);
  const imgs = Array.from(document.querySelectorAll('td.cell img'));
  function count() {
    let ok = 0, broken = 0;
    imgs.forEach(im => {
      if (im.complete) { if (im.naturalWidth > 0) ok++; else broken++; }
    });
    document.body.dataset.loaded = String(ok);
    // the table spans the window (checked by tests/test_gallery.py in headless Chromium)
    document.body.dataset.tableWidth = String(Math.round(document.querySelector('table').getBoundingClientRect().width));
    document.body.dataset.broken = String(broken);
  }
  imgs.forEach(im => { im.addEventListener('load', count); im.addEventListener('error', count); });
  window.addEventListener('load', count);
  count();
})();
"""


def model_means(scores: pd.DataFrame, images: pd.DataFrame) -> dict[str, list]:
    """recipe hash -> [(metric, version, mean, n)] over that column's shown images (every k),
    one metric version each (the newest key when a metric was scored under several)."""
    shown = set(zip(images.recipe_hash, images.prompt_index.astype(int), images.k.astype(int)))
    keep = [(rh, int(p), int(k)) in shown for rh, p, k in zip(scores.recipe_hash, scores.prompt_index, scores.k)]
    df = scores[keep] if len(scores) else scores
    out: dict[str, list] = {}
    for (rh, metric), g in df.groupby(["recipe_hash", "metric"], sort=True):
        version = g.sort_values("created_at").metric_version.iloc[-1]
        g = g[g.metric_version == version]
        out.setdefault(rh, []).append((metric, version, float(g.value.mean()), len(g)))
    return out


def write_gallery(results_dir: Path, bench: str, models: list[str] | None, out_dir: Path,
                  show_failed: bool = False) -> Path:
    """Write `<out_dir>/index.html` (+ `img/`) for `bench`; returns the page's path. Like the
    leaderboard, a function of the store alone (prompt metadata included)."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    if not (results_dir / STORE_FILENAME).exists():
        raise DistarError(f"No results store at {results_dir / STORE_FILENAME}. Run `distar eval` "
                          "first, or point --results at the directory holding results.sqlite.")
    store = ResultsStore(results_dir, readonly=True)
    all_images = store.table("images")
    images = all_images[all_images.bench == bench]
    if images.empty:
        have = ", ".join(sorted(set(all_images.bench))) or "none"
        raise DistarError(f"No images for benchmark '{bench}' in {results_dir}. "
                          f"Benchmarks with images: {have}")
    # One benchmark version per page: the one with the newest images.
    version = str(images.sort_values(["created_at", "bench_version"]).bench_version.iloc[-1])
    other_versions = sorted(set(images.bench_version) - {version})
    images = images[images.bench_version == version]
    runs = store.table("runs")
    if not show_failed and not models and len(runs):  # recipes whose every run failed
        ok = set(runs.recipe_hash[runs.status != "failed"])
        failed_only = set(runs.recipe_hash[runs.status == "failed"]) - ok
        images = images[~images.recipe_hash.isin(failed_only)]
    cols = _columns(images, runs, models)
    scores = store.table("scores", "WHERE bench=? AND bench_version=?", (bench, version))
    shown = metric_shown(scores)

    pm = read_prompt_meta(store, bench, version)
    keys = [k for k in pm.group_keys if any(k in m for m in pm.meta.values())]
    img_dir = inside(out_dir, out_dir / IMG_DIR)  # a linked img/ would take the thumbnails out
    img_dir.mkdir(parents=True, exist_ok=True)

    col_hashes = {rh for rh, _ in cols}
    images = images[images.recipe_hash.isin(col_hashes)].sort_values(
        ["prompt_index", "recipe_hash", "k"])
    first = images.drop_duplicates(["prompt_index", "recipe_hash"], keep="first")
    n_k = images.groupby(["prompt_index", "recipe_hash"]).size()
    by_cell = {(int(r.prompt_index), r.recipe_hash): r for r in first.itertuples()}
    prompt_text = {int(r.prompt_index): r.prompt for r in first.itertuples()}
    score_map: dict[tuple[int, str, int], list[tuple[str, str, float]]] = {}
    for r in scores[scores.recipe_hash.isin(col_hashes)].sort_values(
            ["metric", "metric_version"]).itertuples():
        score_map.setdefault((int(r.prompt_index), r.recipe_hash, int(r.k)), []).append(
            (r.metric, r.metric_version, float(r.value)))

    used: set[str] = set()
    created: set[str] = set()
    n_imgs = 0
    e = html.escape
    body = []
    for i in sorted(prompt_text):
        meta = pm.meta.get(i, {})
        attrs = "".join(f' data-g-{_safe_key(k)}="{e(str(meta[k]))}"' for k in keys if k in meta)
        meta_line = " · ".join(e(str(meta[k])) for k in keys if k in meta)
        cells = [f'<td class="idx">{i}</td>',
                 f'<td class="prompt">{e(prompt_text[i])}'
                 + (f'<div class="meta">{meta_line}</div>' if meta_line else "") + "</td>"]
        for rh, label in cols:
            r = by_cell.get((i, rh))
            if r is None:
                cells.append('<td class="cell"><div class="missing">not generated</div></td>')
                continue
            rel = _thumbnail(results_dir / r.path, img_dir, created)
            if rel is None:
                cells.append(f'<td class="cell"><div class="missing">file missing: '
                             f'{e(r.path)}</div></td>')
                continue
            used.add(Path(rel).name)
            n_imgs += 1
            lines = [f'<span title="{e(m)} = {e(v)}">{e(score_text(shown[(m, v)], x))}</span>'
                     for m, v, x in score_map.get((i, rh, int(r.k)), [])]
            if n_k[(i, rh)] > 1:
                lines.append(f"image k={int(r.k)} of {int(n_k[(i, rh)])}")
            full = os.path.relpath(results_dir / r.path, out_dir)  # the original image
            cells.append(f'<td class="cell"><a href="{e(full)}"><img src="{e(rel)}" '
                         f'loading="lazy" alt="{e(label)}: prompt {i}" title="{e(r.path)}"></a>'
                         f'<div class="scores">{"<br>".join(lines)}</div></td>')
        body.append(f"<tr{attrs}>" + "".join(cells) + "</tr>")

    # Thumbnails no longer on the page go, but only those a previous run of this command wrote
    # (listed in its manifest): anything else in --out is the user's.
    manifest_path = out_dir / MANIFEST
    try:
        ours = set(json.loads(manifest_path.read_text()).get("thumbnails", []))
    except (OSError, ValueError, AttributeError):
        ours = set()
    for name in sorted(ours - used):
        (img_dir / Path(name).name).unlink(missing_ok=True)
    ours = (ours & used) | created

    filters = []
    for k in keys:
        values = sorted({str(m[k]) for m in pm.meta.values() if m.get(k)})
        opts = "".join(f'<option value="{e(v)}">{e(v)}</option>' for v in values)
        filters.append(f'<label>{e(k)} <select data-key="{_safe_key(k)}">'
                       f'<option value="">all</option>{opts}</select></label>')
    if pm.missing:
        filters.append(f"<span>(no category filter: {e(pm.missing)})</span>")
    note = (f" Other stored versions not shown: {e(', '.join(other_versions))}."
            if other_versions else "")
    means = model_means(scores, images)
    head_cells = "".join(f'<th title="recipe {e(rh)}">{e(label)}'
                         + "".join(f'<div class="means" title="mean over its {n} scored images">'
                                   f'{e(score_text(shown[(m, v)], x))}</div>'
                                   for m, v, x, n in means.get(rh, []))
                         + "</th>" for rh, label in cols)
    page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>distar gallery: {e(bench)}</title>
<style>{_CSS}</style>
</head>
<body data-loaded="0" data-broken="0" data-total="{n_imgs}">
<header>
<h1>distar gallery: {e(bench)} (version {e(version)})</h1>
<p>{len(body)} prompts x {len(cols)} models; images and scores from {e(STORE_FILENAME)} (first
image of each prompt; under each model its mean per metric over all its images here; click a
thumbnail for the full image; hover a score for its metric version).{note}</p>
<div class="filters">{"".join(filters)}<span id="shown"></span></div>
</header>
<table>
<thead><tr><th>#</th><th>prompt</th>{head_cells}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody>
</table>
<script>{_JS}</script>
</body>
</html>
"""
    out = out_dir / PAGE
    atomic.write_text(out, page)  # atomic: a link at either name is replaced, not followed
    atomic.write_text(manifest_path, json.dumps({"page": PAGE, "thumbnails": sorted(ours)}, indent=1))
    return out

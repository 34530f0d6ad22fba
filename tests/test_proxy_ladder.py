"""The proxy ladder (di_star.mini.proxy_ladder, `distar lab proxy-ladder`): its agreement
statistic on hand-made cases, the shipped rungs (load over the shipped proxy, distinct version
keys, differentiable, files matching their manifest, small), and a dry run of the command."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from di_star.mini import proxy_ladder as L


def test_gold_pairs_keep_only_same_prompt_pairs_with_a_gap():
    gold = np.array([0.50, 0.51, 0.60, 0.10, 0.30])
    owner = np.array([0, 0, 0, 1, 1])
    pairs = {tuple(p) for p in L.gold_pairs(gold, owner, 0.02)}
    # prompt 0: (0, 1) differs by 0.01 < 0.02 -> dropped; (0, 2), (1, 2) kept; prompt 1: (3, 4)
    assert pairs == {(0, 2), (1, 2), (3, 4)}


def test_agreement_closed_form():
    """3 pairs: one agreed, one reversed, one proxy tie (counts 1/2): (1 + 0 + 0.5) / 3."""
    gold = np.array([0.9, 0.1, 0.2, 0.8, 0.4, 0.6])
    proxy = np.array([0.3, 0.1, 0.5, 0.2, 0.7, 0.7])
    owner = np.array([0, 0, 1, 1, 2, 2])
    a = L.agreement(proxy, gold, owner, n_boot=200)
    assert a["agreement"] == pytest.approx(1.5 / 3)
    assert a["pairs"] == 3 and a["prompts"] == 3
    lo, hi = a["agreement_ci"]
    assert 0 <= lo <= a["agreement"] <= hi <= 1
    # a proxy that orders every pair as gold does agrees fully, whatever its scale
    assert L.agreement(10 * gold + 3, gold, owner, n_boot=200)["agreement"] == 1.0


def test_delta_holds_only_changed_tensors_and_round_trips():
    base = L.shipped_proxy()
    model = L.shipped_proxy()
    with torch.no_grad():
        model.visual_projection.weight.add_(0.01)
        model.text_model.embeddings.token_embedding.weight.add_(0.01)  # frozen: never shipped
    delta = L.delta_state(model, base)
    assert set(delta) == {"visual_projection.weight"}
    assert all(v.dtype == torch.float16 for v in delta.values())
    again = L.apply_delta(L.shipped_proxy(), delta)
    assert torch.equal(again.visual_projection.weight, model.visual_projection.weight.half().float())


def test_shipped_ladder_matches_its_manifest_and_is_small():
    m = L.ladder_manifest()
    assert L.verify_ladder() == []
    names = [n for n in m["proxies"] if n != L.SHIPPED]
    assert names == list(L.RUNGS) and L.SHIPPED in m["proxies"]
    for n in (L.SHIPPED, *L.RUNGS):
        e = m["proxies"][n]
        assert e["name"] == n and e["pairs_heldout"] > 0 and -1 <= e["spearman"] <= 1
        lo, hi = e["agreement_ci"]
        assert 0 <= lo <= e["agreement"] <= hi <= 1
    for n in L.RUNGS:
        assert (L.LADDER_DIR / m["proxies"][n]["file"]).stat().st_size < 700_000
    text = (L.LADDER_DIR / L.MANIFEST).read_text()
    assert "/work/" not in text and "/home/" not in text and '"/' not in text
    assert m["commit"] and m["command"].startswith("distar lab proxy-ladder")


def test_a_changed_rung_file_or_another_base_proxy_is_refused(tmp_path):
    import shutil

    from di_star.mini import weights as mw
    from distar.core.errors import DistarError
    copy = tmp_path / "ladder"
    shutil.copytree(L.LADDER_DIR, copy)
    assert L.rung_delta("mini_proxy_r2", mw.SHIPPED_DIR, copy)  # intact: loads
    f = copy / "mini_proxy_r2" / L.DELTA
    f.write_bytes(f.read_bytes()[:-1] + b"\x01")
    assert L.verify_ladder(copy) == ["changed: mini_proxy_r2/delta.safetensors"]
    with pytest.raises(DistarError, match="does not match"):
        L.rung_delta("mini_proxy_r2", mw.SHIPPED_DIR, copy)
    world = tmp_path / "world" / "proxy_reward"
    world.mkdir(parents=True)
    (world / "model.safetensors").write_bytes(b"another proxy")
    with pytest.raises(DistarError, match="fine-tuned from the shipped proxy"):
        L.rung_delta("mini_proxy_r1", world.parent, copy)


def test_rungs_load_as_metrics_with_distinct_versions_and_gradients():
    import di_star  # noqa: F401  (registers the mini world)
    from evalsuite.metrics import METRICS, load_metric
    from di_star.mini.learned_metrics import MiniPickScore, MiniProxyR1
    keys = {MiniPickScore.version_key()}
    for name in L.RUNGS:
        assert name in METRICS.names() and "agreement with gold" in METRICS.describe()[name]
        m = load_metric(name, device="cpu")
        assert "agr" in m.info.label
        keys.add(m.info.key)
    assert len(keys) == 1 + len(L.RUNGS)
    r1 = load_metric("mini_proxy_r1", device="cpu")
    assert r1.info.key == MiniProxyR1.version_key()
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    s = r1.score_tensor(x, ["a red circle", "two blue squares"])
    s.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    base = load_metric("mini_pickscore", device="cpu")
    with torch.no_grad():
        assert not torch.allclose(base.score_tensor(x, ["a red circle"] * 2),
                                  r1.score_tensor(x, ["a red circle"] * 2))


def test_rung_is_a_trainer_reward():
    from di_star.sdxl.reward import build_reward, check_reward
    check_reward("mini_proxy_r3")
    r = build_reward("mini_proxy_r3", torch.device("cpu"))
    assert callable(r.score_tensor)


@pytest.mark.slow
def test_dry_run_writes_a_measured_ladder(tmp_path):
    from typer.testing import CliRunner

    from distar.cli import app
    res = CliRunner().invoke(app, ["lab", "proxy-ladder", "--dry-run", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "dry-run" / "ladder" / L.MANIFEST).read_text())
    names = [r.name for r in L.DRY_RUN.rungs]
    assert list(m["proxies"]) == [L.SHIPPED, *names]
    for below, n in zip([L.SHIPPED, *names], names):
        e = m["proxies"][n]
        assert e["pairs_heldout"] > 0 and e["train"]["pairs"] > 0
        assert (tmp_path / "dry-run" / "ladder" / e["file"]).is_file()
        assert e["vs_below"]["proxy"] == below and e["vs_below"]["pairs"] == e["pairs_heldout"]
    assert m["proxies"]["mini_proxy_r3"]["train"]["sources"][-1].startswith("di_star_in_s11")
    # the listwise rung continues the rung below it, as fitted in this run
    r4 = m["proxies"]["mini_proxy_r4"]["train"]
    assert r4["loss"] == "listwise" and r4["init"] == "mini_proxy_r3"
    assert r4["init_sha256"] == m["proxies"]["mini_proxy_r3"]["sha256"]


def test_prompt_groups_collect_each_prompts_images():
    owner = np.array([0, 1, 2, 0, 1, 2])  # two sources of three prompts, as load_split stacks them
    assert L.prompt_groups(owner).tolist() == [[0, 3], [1, 4], [2, 5]]


def test_listwise_loss_rewards_gold_order_and_its_dense_term_is_pearson():
    gold = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.6, 0.4]])
    right, wrong = 0.5 * gold, -0.5 * gold
    scale = torch.tensor(20.0)
    assert L.listwise_loss(right, gold, scale, 0.0) < L.listwise_loss(wrong, gold, scale, 0.0)
    # the dense term alone: 1 - Pearson r over all images, 0 for any increasing affine map, 2 reversed
    pair = L.listwise_loss(right, gold, scale, 0.0)
    assert L.listwise_loss(right, gold, scale, 1.0) - pair == pytest.approx(0.0, abs=1e-6)
    assert L.listwise_loss(3 * gold - 1, gold, scale, 1.0) - L.listwise_loss(3 * gold - 1, gold, scale, 0.0) \
        == pytest.approx(0.0, abs=1e-6)
    assert L.listwise_loss(wrong, gold, scale, 1.0) - L.listwise_loss(wrong, gold, scale, 0.0) \
        == pytest.approx(2.0, abs=1e-6)
    # a near-tie (gap < MIN_GAP) is labelled 0.5: the pair loss is then smallest at equal cosines
    tie = torch.tensor([[0.50, 0.51]])
    at = [L.listwise_loss(torch.tensor([[c, 0.0]]), tie, scale, 0.0).item() for c in (-0.1, 0.0, 0.1)]
    assert at[1] < at[0] and at[1] < at[2]


def test_a_continued_rung_needs_the_rung_it_continues_and_goes_stale_with_it(tmp_path):
    from distar.core.errors import DistarError
    rung = L.Rung("mini_proxy_r4", 2, ("onestep",), 1, 1, dense=1.0, init="mini_proxy_r3")
    with pytest.raises(DistarError, match="continues from mini_proxy_r3"):
        L.rung_start(rung, tmp_path)
    start = tmp_path / "ladder" / "mini_proxy_r3" / L.DELTA
    start.parent.mkdir(parents=True)
    start.write_bytes(b"r3 v1")
    own = tmp_path / "ladder" / "mini_proxy_r4"
    own.mkdir(parents=True)
    (own / L.DELTA).write_bytes(b"r4")
    (own / "train.json").write_text(json.dumps({"rung": repr(rung), "data": {
        "init_sha256": L._sha256(start)}}))
    assert L.rung_cached(rung, tmp_path)
    start.write_bytes(b"r3 v2")  # r3 refitted: r4 must be refitted too
    assert not L.rung_cached(rung, tmp_path)


def test_paired_agreement_counts_the_same_pairs_for_both():
    gold = np.array([0.9, 0.1, 0.2, 0.8, 0.4, 0.6])
    owner = np.array([0, 0, 1, 1, 2, 2])
    right, wrong = gold.copy(), -gold
    d = L.paired_agreement(right, wrong, gold, owner, n_boot=200)
    assert d["diff"] == 1.0 and d["pairs"] == 3
    half = np.array([0.9, 0.1, 0.1, 0.8, 0.6, 0.4])  # prompt 0 right, 1 right, 2 reversed
    d = L.paired_agreement(half, wrong, gold, owner, n_boot=200)
    assert d["diff"] == pytest.approx(2 / 3, abs=1e-4)  # rounded to 4 places, as the manifest
    lo, hi = d["diff_ci"]
    assert lo <= d["diff"] <= hi

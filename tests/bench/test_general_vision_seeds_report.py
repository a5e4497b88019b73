"""benchmarks/general_vision.py `report`: merging per-seed runs, mean ± sd, the EViT verdict rule."""

from __future__ import annotations

import argparse
import json

import pytest

from tests.bench.loader import load_benchmark


@pytest.fixture(scope="module")
def gv():
    return load_benchmark("general_vision", "gv_bench")


def _run(seed: int, vit: float, evit: float, ci: tuple[float, float]) -> dict:
    meta = dict(command=f"python x --seeds {seed}", torch="t", device="cpu", threads=1, n=10, image_size=64, patch=8,
                embed_dim=96, depth=4, heads=3, epochs=1, ft_epochs=1, batch=8, seeds=[seed], dataset_args={},
                when="now", load_avg_start=[1.0], load_avg_end=[1.0], split_sizes={})
    rows = [dict(model="vit (scratch)", seed=seed, test_auroc=vit, val_auroc=vit, gmacs=1.0, macs_vs_vit=1.0,
                 img_s=100.0 + seed, img_s_vs_vit=1.0),
            dict(model="evit r=0.7 (fine-tuned from the vit)", seed=seed, test_auroc=evit, val_auroc=evit, gmacs=0.7,
                 macs_vs_vit=0.7, img_s=140.0, img_s_vs_vit=1.4,
                 paired_vs_vit=dict(diff=evit - vit, ci_low=ci[0], ci_high=ci[1], n_resamples=10))]
    return dict(meta=meta, results=rows)


@pytest.mark.parametrize("cis, expected", [
    ([(-0.01, 0.01)] * 3, "holds"),
    ([(-0.06, -0.03), (-0.05, -0.025), (-0.01, 0.01)], "does not hold"),
    ([(-0.03, 0.01), (-0.01, 0.01), (-0.01, 0.02)], "not separable at this budget"),
])
def test_report_merges_seeds_and_states_the_verdict(gv, tmp_path, cis, expected):
    files = []
    for s, ci in enumerate(cis):
        f = tmp_path / f"s{s}.json"
        f.write_text(json.dumps(_run(s, 0.80 + 0.01 * s, 0.80 + 0.01 * s + sum(ci) / 2, ci)))
        files.append(str(f))
    gv.report(argparse.Namespace(runs=files, margin=0.02, name="seeds", out=str(tmp_path)))
    out = json.loads((tmp_path / "seeds.json").read_text())
    assert out["verdict"]["verdict"] == expected
    assert out["complete_seeds"] == [0, 1, 2]
    vit = next(r for r in out["summary"] if r["model"] == "vit (scratch)")
    assert vit["test_auroc"]["values"] == pytest.approx([0.80, 0.81, 0.82])
    assert vit["test_auroc"]["mean"] == pytest.approx(0.81) and vit["test_auroc"]["sd"] == pytest.approx(0.01)
    evit = next(r for r in out["summary"] if r["model"].startswith("evit"))
    assert evit["compare_over_seeds"]["outcome"] == "not separable"  # 3 pairs: the sign test cannot pass
    md = (tmp_path / "seeds.md").read_text()
    assert f"**{expected}**" in md and "PARTIAL" not in md
    assert (tmp_path / "seeds.png").stat().st_size > 0


def test_report_marks_a_partial_run(gv, tmp_path):
    f = tmp_path / "s0.json"
    f.write_text(json.dumps(_run(0, 0.8, 0.8, (-0.01, 0.01))))
    gv.report(argparse.Namespace(runs=[str(f)], margin=0.02, name="seeds", out=str(tmp_path)))
    assert "PARTIAL" in (tmp_path / "seeds.md").read_text()

"""bench_speed / bench_train / bench_generation run end to end on tiny settings (the numbers are not asserted)."""
from __future__ import annotations

import json

import pytest
import torch

from benchmarks import bench_generation, bench_speed, bench_train
from tests.test_bench_harness import _tiny_dataset
from utils.errors import UserError


def test_speed_quick(tmp_path):
    res = bench_speed.main(["--quick", "--depths", "1", "--batches", "1,2", "--repeats", "1",
                            "--results-dir", str(tmp_path)])
    rows = res["rows"]
    assert {(r["batch"], r["schedule"], r["ar_sequence"]) for r in rows} == {
        (b, sch, s) for b in (1, 2) for sch in ("plain", "default") for s in ("pyramid", "last")}
    lay = bench_speed.QUICK_LAYOUT["v_patch_nums"]
    for r in rows:  # forward passes: one per scale for VAR, one per token for AR; the head draws every token in turn
        assert r["var_forward_passes"] == len(lay)
        assert r["var_sequential_draws"] == (sum(lay) if r["schedule"] == "default" else 0)
        assert r["ar_forward_passes"] == (sum(lay) if r["ar_sequence"] == "pyramid" else lay[-1])
        assert r["speedup"] == pytest.approx(r["ar_s_per_window"] / r["var_s_per_window"])  # AR time / VAR time
    # both schedules are judged against the same AR timing of the same run
    for b in (1, 2):
        for s in ("pyramid", "last"):
            ar = {r["ar_s_per_window"] for r in rows if r["batch"] == b and r["ar_sequence"] == s}
            assert len(ar) == 1
    b1 = [r for r in rows if r["schedule"] == "default" and r["batch"] == 1 and r["ar_sequence"] == "pyramid"]
    assert res["default_batch1_speedup_by_depth"] == {"1": b1[0]["speedup"]}
    assert res["default_batch1_target_met_depths"] == ([1] if b1[0]["speedup"] >= bench_speed.TARGET_SPEEDUP else [])
    plain = [r["speedup"] for r in rows if r["schedule"] == "plain" and r["ar_sequence"] == "pyramid"]
    assert res["min_speedup_pyramid"] == min(plain)
    saved = json.loads((tmp_path / "speed.json").read_text())
    assert saved["report"]["tables"][0]["rows"] and (tmp_path / "speed_ratio.png").stat().st_size > 0


def test_speed_default_schedule_is_train_py_defaults():
    """The 'default' schedule times the model VAR/train.py builds by default (head, coarse path, levels)."""
    from utils.arg_util import Args
    a = Args()
    kw = bench_speed.schedule_kwargs("default")
    assert kw["intra_ar"] == a.intra_ar > 0 and kw["intra_ar_fhat"] == a.intra_ar_fhat
    assert kw["num_levels"] == a.level_clusters and bench_speed.schedule_kwargs("plain") == {}


def test_speed_ar_step_timer_leaves_no_kv_cache():
    """Timing AR steps mid-sequence must not leave the model's KV caches filled (the next timing would run on
    a stale cache); how close the interpolation is to a full run is measured by the benchmark itself."""
    from models import build_var  # noqa: F401  (VAR importable)
    from models.ar_baseline import build_ar_baseline
    vae, _ = bench_speed.load_tokenizer(None, quick=True)
    ar = build_ar_baseline(vae, "cpu", num_classes=2, depth=1).eval()
    bench_speed.ar_step_seconds(ar, 1, 0.0, 0, 4, 1)
    bench_speed.ar_step_seconds(ar, 1, 0.0, ar.N - 4, 4, 1)
    assert all(b.attn.cached_k is None and not b.attn.caching for b in ar.blocks)  # caches cleaned up


def test_speed_threads_go_to_their_own_file(tmp_path):
    before = torch.get_num_threads()
    try:
        res = bench_speed.main(["--quick", "--depths", "1", "--batches", "1", "--repeats", "1", "--schedules", "plain",
                                "--sequences", "last", "--threads", "2", "--results-dir", str(tmp_path)])
    finally:
        torch.set_num_threads(before)
    assert res["threads"] == 2 and not (tmp_path / "speed.json").exists()
    saved = json.loads((tmp_path / "speed_threads2.json").read_text())
    assert saved["report"]["title"].endswith("2 CPU threads") and (tmp_path / "speed_ratio_threads2.png").exists()
    with pytest.raises(UserError, match="--threads=0"):
        bench_speed.main(["--quick", "--threads", "0", "--results-dir", str(tmp_path)])


def test_speed_bad_flags(tmp_path):
    with pytest.raises(UserError, match="--depths"):
        bench_speed.main(["--quick", "--depths", "four", "--results-dir", str(tmp_path)])
    with pytest.raises(UserError, match="--sequences"):
        bench_speed.main(["--quick", "--sequences", "spiral", "--results-dir", str(tmp_path)])
    with pytest.raises(UserError, match="--schedules"):
        bench_speed.main(["--quick", "--schedules", "fast", "--results-dir", str(tmp_path)])
    with pytest.raises(UserError, match="skipped"):
        bench_speed.main(["--quick", "--depths", "1", "--batches", "1", "--skip", "1x1", "--results-dir", str(tmp_path)])


def test_train_quick(tmp_path):
    res = bench_train.main(["--quick", "--depths", "1", "--steps", "1", "--results-dir", str(tmp_path)])
    kinds = {r["kind"]: r for r in res["rows"]}
    assert not res["errors"] and set(kinds) == {"train", "sample"}
    tr, sa = kinds["train"], kinds["sample"]
    assert tr["samples_per_s"] == pytest.approx(tr["batch"] / tr["seconds_per_step"])
    assert tr["peak_rss_mb"] >= tr["rss_after_build_mb"]  # the peak so far cannot be below an earlier reading
    assert sa["windows_per_s"] == pytest.approx(sa["batch"] / sa["seconds_per_batch"])
    with pytest.raises(UserError, match="--device"):
        bench_train.main(["--quick", "--device", "tpu", "--results-dir", str(tmp_path)])


def test_run_all_reuse_skips_saved_results(tmp_path):
    from benchmarks import save_result
    from benchmarks.run_all import main as run_all_main

    results = tmp_path / "results"
    save_result("speed", {"quick": True, "report": {"title": "Saved speed", "text": ["kept"]}}, str(results))
    code = run_all_main(["--quick", "--reuse", "--only", "speed", "--results-dir", str(results), "--threads", "1"])
    summary = json.loads((results / "summary.json").read_text())
    assert code == 0 and summary["runs"]["speed"]["status"] == "reused"
    assert "Saved speed" in (tmp_path / "RESULTS.md").read_text() and not (results / "speed_ratio.png").exists()


@pytest.mark.slow
def test_generation_quick_on_tiny_data(tmp_path, rng):
    data = tmp_path / "data"
    _tiny_dataset(str(data), rng)
    torch.manual_seed(0)
    res = bench_generation.main(["--quick", "--data-root", str(data), "--results-dir", str(tmp_path / "res"),
                                 "--depth", "1", "--n-per-class", "4", "--folds", "2"])
    assert set(res["quality_vs_val"]) == {"rest", "task"}
    for cname, kinds in res["quality_vs_val"].items():
        assert {"VAR", "AR next-token", "phase-randomised real"} <= set(kinds)
        assert all(v >= 0 for v in kinds["VAR"]["psd_error_db"].values())
    assert res["budget"]["VAR"]["steps"] == res["budget"]["AR"]["steps"] > 0  # same budget
    assert set(res["val_nll_per_token"]) == {"VAR", "AR"}
    assert (tmp_path / "res" / "generation_psd.png").exists() and (tmp_path / "res" / "generation_examples.png").exists()

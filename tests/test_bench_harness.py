"""The benchmark harness runs end to end in --quick mode on a tiny synthetic dataset (numbers not asserted)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from benchmarks import bench_name, save_result
from benchmarks.report import END_MARKER, START_MARKER, update_readme
from benchmarks.run_all import discover
from benchmarks.run_all import main as run_all_main
from utils.eeg_bands import DEFAULT_BANDS
from utils.eeg_schema import write_window
from utils.errors import UserError

SFREQ, N_CH, N_T = 100.0, 3, 200


def _stages(x_CT: np.ndarray) -> np.ndarray:
    """Cumulative stages by FFT masking (a test stand-in for the FIR stages; only shapes matter here)."""
    X = np.fft.rfft(x_CT, axis=-1)
    f = np.fft.rfftfreq(x_CT.shape[-1], 1 / SFREQ)
    return np.stack([np.fft.irfft(X * ((f >= DEFAULT_BANDS[0][0]) & (f <= hi)), n=x_CT.shape[-1], axis=-1)
                     for _, hi in DEFAULT_BANDS])


def _tiny_dataset(root: str, rng: np.random.Generator) -> None:
    """2 training subjects and 1 validation subject, each with a rest (0) and a task (1) recording."""
    for split, subjects in (("train", ["s0", "s1"]), ("val", ["s2"])):
        for subj in subjects:
            for label in (0, 1):
                e = rng.standard_normal((N_CH, 8 * N_T + 100))
                x = np.zeros_like(e)
                for t in range(2, e.shape[1]):
                    x[:, t] = (1.3 - 0.2 * label) * x[:, t - 1] - 0.5 * x[:, t - 2] + e[:, t]
                x = x[:, 100:] * 5.0
                for w in range(8):
                    seg = x[:, w * N_T:(w + 1) * N_T]
                    write_window(os.path.join(root, split, f"{subj}_{label}_w{w:03d}.npz"), seg, _stages(seg),
                                 DEFAULT_BANDS, SFREQ, ch_names=["C3", "Cz", "C4"], source=f"{subj}_{label}.edf",
                                 start=w * N_T, subject=subj, label=label)
    with open(os.path.join(root, "manifest.json"), "w", encoding="utf-8") as fh:
        json.dump({"label_names": ["rest", "task"]}, fh)


def test_discover_and_names():
    assert "baselines" in discover()
    assert bench_name("benchmarks.bench_var") == "var" and bench_name("bench_ingest") == "ingest"


def test_run_all_quick_on_tiny_data(tmp_path, rng):
    data = tmp_path / "data"
    _tiny_dataset(str(data), rng)
    results = tmp_path / "results"
    code = run_all_main(["--quick", "--only", "baselines", "--results-dir", str(results), "--data-root", str(data),
                         "--threads", "1"])
    assert code == 0
    summary = json.loads((results / "summary.json").read_text())
    assert summary["runs"]["baselines"]["status"] == "ok"
    assert summary["machine"]["cpu_count"] >= 1 and "date_utc" in summary["machine"]
    res = json.loads((results / "baselines.json").read_text())
    assert res["quick"] is True and res["data"]["n_channels"] == N_CH
    assert set(res["generation"]["validation"]) == {"rest", "task"}
    assert (results / "baselines_rd.png").stat().st_size > 0 and (results / "baselines_psd.png").exists()
    text = (tmp_path / "RESULTS.md").read_text()  # beside the results folder, never the README
    assert text.startswith("# Benchmark results") and "Transform codec vs Gaussian" in text
    assert "(results/baselines_rd.png)" in text  # figure links relative to RESULTS.md


def test_report_falls_back_without_markers(tmp_path):
    results = tmp_path / "results"
    save_result("demo", {"report": {"title": "Demo", "tables": [{"columns": ["a", "b"], "rows": [[1, 2.5]]}]}},
                str(results))
    save_result("demo", {"report": {"title": "Demo2"}}, str(results))
    assert (results / "demo.prev.json").exists()  # the former result is kept, not silently lost
    summary = {"machine": {}, "runs": {}, "results": {"demo": {"report": {"title": "Demo", "tables": [
        {"columns": ["a", "b"], "rows": [[1, 2.5]]}]}}}}
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n", encoding="utf-8")
    written = update_readme(summary, str(readme), str(results))
    assert written == str(tmp_path / "RESULTS.md")
    assert readme.read_text() == "# no markers here\n"
    assert "| 1 | 2.5 |" in (tmp_path / "RESULTS.md").read_text()


def test_run_all_rejects_unknown_benchmark(tmp_path):
    with pytest.raises(UserError, match="benchmarks found"):
        run_all_main(["--only", "nonexistent", "--results-dir", str(tmp_path), "--no-markdown"])


def test_a_failing_benchmark_is_recorded_not_raised(tmp_path):
    from benchmarks.run_all import run_one

    status = run_one("no_such_module", ["--results-dir", str(tmp_path)], threads=1, timeout=120)
    assert status["status"] == "failed" and "no_such_module" in status["error"]


def _saved_tokenizer_run(out, flags):
    """A tokenizer run folder whose last checkpoint records the settings ``train_vae.py flags`` derive."""
    from utils.checkpoint import save_checkpoint
    from utils.vae_arg_util import VAEArgs
    args = VAEArgs.parse(flags)
    args.derive(world_size=1)
    os.makedirs(out)
    save_checkpoint(os.path.join(out, "vae-ckpt-last.pth"), {"args": args.state_dict(), "epoch": 80})


def test_bench_tokenizer_resumes_its_run_only_under_the_same_recipe(tmp_path, monkeypatch):
    from benchmarks import bench_tokenizer as bt
    out = str(tmp_path / "tokenizer_run")
    flags = [f"--data_path={tmp_path}", f"--local_out_dir_path={out}", *bt.FINAL_TRAIN_FLAGS, *bt.DEFAULT_TRAIN_FLAGS]
    assert bt.recipe_changes(out, flags) == []  # no run yet
    _saved_tokenizer_run(out, flags + ["--reseed_margin=0.08", "--save_ep=2"])
    assert bt.recipe_changes(out, flags + ["--reseed_margin=0.08", "--save_ep=7"]) == []  # bookkeeping only
    assert bt.recipe_changes(out, flags + ["--reseed_margin=0.08", "--workers=3"]) == []
    assert bt.recipe_changes(out, flags + ["--reseed_margin=0.5"]) == ["reseed_margin: 0.08 -> 0.5"]
    changed = bt.recipe_changes(out, flags + ["--reseed_margin=0.08", "--ep=20"])
    assert "ep: 40 -> 20" in changed and any(c.startswith("wp:") for c in changed)

    calls = []

    class Done:
        returncode = 0

    monkeypatch.setattr(bt.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or Done())
    bt._train_default(str(tmp_path), out, quick=False)  # the saved run used margin 0.08, the recipe says otherwise
    moved = [p for p in os.listdir(tmp_path) if p.startswith("tokenizer_run.old-")]
    assert len(moved) == 1 and os.path.exists(tmp_path / moved[0] / "vae-ckpt-last.pth")  # kept, not deleted
    assert not os.path.exists(out) and len(calls) == 1


def test_bench_var_points_at_fresh_when_its_saved_run_does_not_fit(tmp_path, monkeypatch):
    import argparse

    from benchmarks import bench_var

    def refuse(cmd, what, timeout=None):
        raise UserError(f"{what}: ar-ckpt-last.pth was trained with other tokenizer weights than --vae_ckpt=t.pth; "
                        "pass the tokenizer this run started with or choose a new --local_out_dir_path")

    monkeypatch.setattr(bench_var, "_run", refuse)
    args = argparse.Namespace(fresh=False, depth=2, bs=4, ep=1, tblr=1e-3, save_it=0, save_ep=1, alng=1e-3, fp16=0)
    with pytest.raises(UserError, match=r"other tokenizer weights.*add --fresh"):
        bench_var.train_var(args, str(tmp_path), "t.pth", str(tmp_path / "var_run"))


def test_saved_results_hold_no_machine_paths(tmp_path):
    from benchmarks import load_result
    from utils.project_info import REPO_ROOT
    inside = os.path.join(REPO_ROOT, "benchmarks", "results", "raw", "eegmat100")
    save_result("paths", {"data_root": inside, "ckpt": "/tmp/xyz123/var_run/ar-ckpt-best.pth",
                          "text": ["trained on /home/someone/data/eegmat100_s25 for 3 epochs, 12.5 bits/s"],
                          "odd_root": "from /ci-box/clone/runs/var_S4.pt, 2.2 dB/Hz, 1/f slope"},
                str(tmp_path))
    res = load_result("paths", str(tmp_path))
    assert res["data_root"] == "benchmarks/results/raw/eegmat100"
    assert res["ckpt"] == "var_run/ar-ckpt-best.pth"
    assert res["text"] == ["trained on data/eegmat100_s25 for 3 epochs, 12.5 bits/s"]
    assert res["odd_root"] == "from runs/var_S4.pt, 2.2 dB/Hz, 1/f slope"  # any root, units untouched


def test_run_all_writes_tracked_results_only_when_asked():
    import subprocess
    from benchmarks import RESULTS_DIR
    from benchmarks.run_all import build_parser, results_dir_for
    from utils.project_info import REPO_ROOT
    plain = results_dir_for(build_parser().parse_args(["--quick"]))
    tracked = subprocess.run(["git", "-C", REPO_ROOT, "check-ignore", "-q", plain], check=False).returncode
    assert tracked == 0, f"{plain} is not ignored by git"  # 0 = ignored
    assert results_dir_for(build_parser().parse_args(["--write-results"])) == RESULTS_DIR
    assert results_dir_for(build_parser().parse_args(["--results-dir", "x"])) == "x"


def test_bench_protocols_build_their_own_dataset_and_name_their_runs(tmp_path, monkeypatch):
    """``--split-by time`` (issue 13's second protocol) builds the time split of every recording, reads the tokenizer
    trained on it and trains its VAR into a run of its own, never the subject split's."""
    from benchmarks import bench_baselines as bt
    from benchmarks import bench_samples, bench_token_nll, bench_zeroshot
    from utils.errors import CheckpointError
    built = {}
    monkeypatch.setattr(bt, "ensure_default_dataset", lambda root, flags: built.setdefault(root, flags) and root)
    raw = str(tmp_path / "raw")
    sub, tim = bt.ensure_bench_dataset(raw), bt.ensure_bench_dataset(raw, "time")
    assert os.path.basename(sub) == "eegmat100_s25_val4" and os.path.basename(tim) == "eegmat100_t25"
    f_sub, f_tim = built[sub], built[tim]
    assert f_sub[f_sub.index("--split-by") + 1] == "subject"
    assert f_sub[f_sub.index("--val-groups") + 1] == "Subject05,Subject11,Subject18,Subject24"
    assert f_tim[f_tim.index("--split-by") + 1] == "time" and f_tim[f_tim.index("--val-fraction") + 1] == "0.3"
    assert "--val-groups" not in f_tim
    # everything else (rate, windows, stride, channels, labels) is the same build
    assert [f for f in f_sub if f not in f_sub[f_sub.index("--split-by"):f_sub.index("--split-by") + 4]] == \
        [f for f in f_tim if f not in f_tim[f_tim.index("--split-by"):f_tim.index("--split-by") + 4]]
    assert (bt.split_suffix("subject"), bt.split_suffix("time")) == ("", "_time")
    with pytest.raises(UserError, match="split-by='recording'"):
        bt.split_suffix("recording")
    # bench_samples: the subject split's tokenizer is there, the time split's is not yet
    for run in ("tokenizer_run", "tokenizer_run_time"):
        os.makedirs(os.path.join(raw, run))
    open(os.path.join(raw, "tokenizer_run", "vae-ckpt-best.pth"), "w").close()
    with pytest.raises(UserError, match=r"bench_tokenizer --split-by time first .*raw/tokenizer_run_time"):
        bench_samples.main(["--split-by", "time", "--results-dir", str(tmp_path), "--train-only"])
    open(os.path.join(raw, "tokenizer_run_time", "vae-ckpt-best.pth"), "w").close()
    trained = []
    monkeypatch.setattr(bench_samples, "train_var", lambda data, tok, out, *a: trained.append((data, tok, out)))
    for argv in (["--split-by", "time"], ["--split-by", "time", "--seed", "2"], []):
        bench_samples.main([*argv, "--results-dir", str(tmp_path), "--train-only"])
    assert trained == [(tim, os.path.join(raw, "tokenizer_run_time", "vae-ckpt-best.pth"),
                        os.path.join(raw, "samples_var_new_time")),
                       (tim, os.path.join(raw, "tokenizer_run_time", "vae-ckpt-best.pth"),
                        os.path.join(raw, "samples_var_new_time_seed2")),
                       (sub, os.path.join(raw, "tokenizer_run", "vae-ckpt-best.pth"),
                        os.path.join(raw, "samples_var_new"))]
    # the token NLL and zero-shot benchmarks of the time split read that run, and say which benchmark trains it
    for bench in (bench_token_nll, bench_zeroshot):
        with pytest.raises(CheckpointError, match=r"samples_var_new_time.*bench_samples --split-by time"):
            bench.main(["--split-by", "time", "--results-dir", str(tmp_path)])


def test_run_all_time_split_runs_exactly_the_benchmarks_whose_cli_takes_it(capsys):
    """--split-by time selects the benchmarks whose own --help offers --split-by (asked of each one), and --only
    with any other is a one-line error naming those that take it."""
    import importlib
    takes = []
    for name in discover():
        with pytest.raises(SystemExit):
            importlib.import_module(f"benchmarks.bench_{name}").main(["--help"])
        if "--split-by" in capsys.readouterr().out:
            takes.append(name)
    assert "samples" in takes and "ingest" not in takes
    assert run_all_main(["--list", "--split-by", "time"]) == 0
    assert capsys.readouterr().out.split() == takes
    assert run_all_main(["--list"]) == 0
    assert capsys.readouterr().out.split() == discover()
    with pytest.raises(UserError, match=r"--only ingest with --split-by time: they do not take --split-by; "
                                        r"those that do: " + " ".join(takes)):
        run_all_main(["--split-by", "time", "--only", "ingest", "samples", "--no-markdown"])


def test_run_all_child_saves_a_time_split_result_under_its_time_name(tmp_path, monkeypatch):
    """When a benchmark returns its dict without saving it, run_all's child saves it under the name the protocol
    gives it (<name>_time.json), never over the subject split's <name>.json."""
    import sys
    import types

    from benchmarks.run_all import child_main
    fake = types.ModuleType("benchmarks.bench_fakeprobe")
    fake.main = lambda argv: {"argv": list(argv)}
    monkeypatch.setitem(sys.modules, "benchmarks.bench_fakeprobe", fake)
    child_main("fakeprobe", ["--results-dir", str(tmp_path), "--split-by", "time"])
    assert sorted(os.listdir(tmp_path)) == ["fakeprobe_time.json"]
    child_main("fakeprobe", ["--results-dir", str(tmp_path)])
    assert sorted(os.listdir(tmp_path)) == ["fakeprobe.json", "fakeprobe_time.json"]
    with open(tmp_path / "fakeprobe_time.json", encoding="utf-8") as fh:
        assert json.load(fh)["argv"][-2:] == ["--split-by", "time"]

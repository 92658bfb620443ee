"""VAR training end to end on real EEG (eegmat): validation loss falls, kill + resume == uninterrupted
(bit-identical parameters), torchrun with 2 CPU processes, sampling in µV, one-line errors.

The tokenizer here is the real VQVAE class with random weights and data-initialised codebooks: a fixed,
deterministic tokenizer whose tokens carry the signal's structure, so the test measures whether VAR
learns to predict them (not how good the tokenizer is) and costs no tokenizer training.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.eeg_bands import scale_lengths_for_bands
from utils.eeg_dataset import EEGWindowDataset
from utils.errors import CheckpointError

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

V, G = 32, 2
TRAIN_FLAGS = ["--depth=2", "--bs=16", "--ep=3", "--seed=0", "--save_it=2", "--tlr=3e-3", "--wp=0.5", "--workers=0"]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None), env.pop("RANK", None), env.pop("LOCAL_RANK", None)
    return env


def run_py(repo_root: str, args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=repo_root, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def ds_root(shared_data, repo_root, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("var_ds") / "ds")
    d = os.path.join(shared_data, "physionet-eegmat")
    r = run_py(repo_root, ["-m", "utils.data_eeg", "build", "--inputs", *(os.path.join(d, f"Subject0{s}_{k}.edf")
                                                                           for s in (0, 1) for k in (1, 2)),
                           "--out", out, "--window-sec", "2.56", "--split-by", "subject", "--val-groups", "Subject01",
                           "--label-from", r"regex:_1\.edf$=rest,_2\.edf$=arithmetic", "--progress", "off"])
    assert r.returncode == 0, r.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def tok_ckpt(ds_root, tmp_path_factory) -> str:
    from models import VQVAE
    from vae_checkpoint import TOKENIZER_KEY, tokenizer_info
    ds = EEGWindowDataset(ds_root, "train")
    L = ds.n_times // 4
    pns = scale_lengths_for_bands(ds.bands, ds.sfreq, L)
    torch.manual_seed(0)
    vae = VQVAE(in_channels=ds.n_channels, vocab_size=V, z_channels=8, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                v_patch_nums=pns, tokens_per_pos=G, test_mode=True)
    x_NCT = torch.stack([ds[i][0][-1] for i in range(len(ds))])
    uv_scale = float(x_NCT.std(dim=-1).median())
    with torch.no_grad():
        vae.quantize.init_codebook_from_(vae.encode_BCl(x_NCT / uv_scale), generator=torch.Generator().manual_seed(0))
    info = tokenizer_info(vae, sfreq=ds.sfreq, bands=ds.bands.tolist(), ch_names=ds.ch_names, uv_scale=uv_scale,
                          n_extra_coarse=0, tokens_per_nyquist=1.0)
    path = str(tmp_path_factory.mktemp("var_tok") / "vae-ckpt-best.pth")
    save_checkpoint(path, {TOKENIZER_KEY: info, "vae_wo_ddp": vae.state_dict(), "epoch": 1, "iter": 0}, config=info)
    return path


def train_cmd(ds_root: str, tok: str, out: str, extra: list[str] = ()) -> list[str]:
    return ["VAR/train.py", f"--data_path={ds_root}", f"--vae_ckpt={tok}", f"--local_out_dir_path={out}",
            *TRAIN_FLAGS, *extra]


@pytest.fixture(scope="module")
def run_a(repo_root, ds_root, tok_ckpt, tmp_path_factory) -> str:
    """The uninterrupted reference run."""
    out = str(tmp_path_factory.mktemp("var_run_a"))
    r = run_py(repo_root, train_cmd(ds_root, tok_ckpt, out))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _log_lines(out: str) -> list[dict]:
    lines = [ln for ln in open(os.path.join(out, "log.txt")).read().splitlines()[1:] if ln.strip()]
    return [json.loads(ln) for ln in lines]


def test_validation_loss_falls_and_outputs_exist(run_a):
    epochs = [d for d in _log_lines(run_a) if "vL_mean" in d]
    assert [d["ep"] for d in epochs] == [1, 2, 3]
    v = [d["vL_mean"] for d in epochs]
    assert v[-1] < v[0] - 0.05, v  # learns real structure on held-out subject
    assert v[-1] < math.log(V) - 0.1  # better than uniform guessing over the codebook
    for name in ("delta", "theta", "alpha", "beta", "gamma"):  # per-band-stage metrics
        assert f"vL_{name}" in epochs[-1] and f"vacc_{name}" in epochs[-1]
    files = os.listdir(run_a)
    for f in ("ar-ckpt-last.pth", "ar-ckpt-best.pth", "log.txt", "stdout.txt", "stderr.txt"):
        assert f in files
    tb = [f for f in files if f.startswith("tb-VARd2")]
    assert tb and any(n.startswith("events.out.tfevents") for n in os.listdir(os.path.join(run_a, tb[0])))
    state, _ = load_checkpoint(os.path.join(run_a, "ar-ckpt-last.pth"))
    assert (state["epoch"], state["iter"]) == (3, 0) and state["meta"]["config"]["depth"] == 2
    best, _ = load_checkpoint(os.path.join(run_a, "ar-ckpt-best.pth"))
    assert best["run"]["best_val_L_mean"] == pytest.approx(min(v))


def test_killed_run_resumes_bit_identical(repo_root, ds_root, tok_ckpt, run_a, tmp_path):
    out = str(tmp_path / "b")
    ckpt = os.path.join(out, "ar-ckpt-last.pth")
    proc = subprocess.Popen([sys.executable, *train_cmd(ds_root, tok_ckpt, out)], cwd=repo_root, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0, limit = time.time(), 600
    while not os.path.exists(ckpt) and proc.poll() is None and time.time() - t0 < limit:
        time.sleep(0.02)
    if not os.path.exists(ckpt):
        ended = proc.poll()
        proc.kill()
        proc.wait(timeout=30)
        pytest.fail(f"no first checkpoint {ckpt} after {time.time() - t0:.0f} s (limit {limit} s): "
                    + (f"the run exited with code {ended}" if ended is not None else "the run was still going (machine "
                       "overloaded?); killed it"))
    assert proc.poll() is None, "the run ended before its first checkpoint could be interrupted"
    proc.send_signal(signal.SIGKILL)  # mid-run, right after the first (mid-epoch) checkpoint
    proc.wait(timeout=30)
    killed_at, _ = load_checkpoint(ckpt)
    assert (killed_at["epoch"], killed_at["iter"]) < (3, 0)
    r = run_py(repo_root, train_cmd(ds_root, tok_ckpt, out))  # the same command resumes
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[auto_resume] resuming from" in open(os.path.join(out, "stdout.txt")).read()
    a, _ = load_checkpoint(os.path.join(run_a, "ar-ckpt-last.pth"))
    b, _ = load_checkpoint(ckpt)
    assert (b["epoch"], b["iter"]) == (3, 0)
    for k, va in a["trainer"]["var_wo_ddp"].items():
        assert torch.equal(va, b["trainer"]["var_wo_ddp"][k]), k
    assert [d["vL_mean"] for d in _log_lines(run_a) if "vL_mean" in d][-1] == \
        [d["vL_mean"] for d in _log_lines(out) if "vL_mean" in d][-1]


def resume_refused(repo_root, ds_root, tok_ckpt, run_a, out: str, flags: list[str]) -> str:
    """Resume a copy of ``run_a``'s last checkpoint with other ``flags``; it must exit 2 with one error line
    (returned) and no traceback."""
    os.makedirs(out)
    shutil.copy(os.path.join(run_a, "ar-ckpt-last.pth"), out)
    r = run_py(repo_root, train_cmd(ds_root, tok_ckpt, out, flags))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error:")
    return last


def test_resume_with_other_architecture_is_one_line_error(repo_root, ds_root, tok_ckpt, run_a, tmp_path):
    last = resume_refused(repo_root, ds_root, tok_ckpt, run_a, str(tmp_path / "c"), ["--depth=3"])
    assert "depth=2" in last and "depth=3" in last




def test_intra_steps_train_resume_guard_and_sampling(repo_root, ds_root, tok_ckpt, tmp_path):
    """VAR/train.py with steps inside a scale: the run records its steps, a resume with other steps is one
    line naming both, and sample.py samples it with fewer steps than it was trained with."""
    out = str(tmp_path / "intra")
    r = run_py(repo_root, train_cmd(ds_root, tok_ckpt, out, ["--ep=1", "--intra_steps=2", "--intra_ar=0"]))
    assert r.returncode == 0, r.stderr[-3000:]
    state, _ = load_checkpoint(os.path.join(out, "ar-ckpt-last.pth"))
    assert state["trainer"]["config"]["intra_steps"] == 2
    assert "content_embed.weight" in state["trainer"]["var_wo_ddp"]
    assert state["trainer"]["config"]["intra_nbr"] == 4 and "neighbour_embed.weight" in state["trainer"]["var_wo_ddp"]
    before = open(os.path.join(out, "ar-ckpt-last.pth"), "rb").read()
    r = run_py(repo_root, train_cmd(ds_root, tok_ckpt, out, ["--ep=2"]))  # default --intra_steps=1
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error:") and "intra_steps=2" in last and "intra_steps=1" in last
    r = run_py(repo_root, train_cmd(ds_root, tok_ckpt, out, ["--ep=2", "--intra_steps=2", "--intra_nbr=1", "--intra_ar=0"]))
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error:") and "intra_nbr=4" in last and "intra_nbr=1" in last
    assert open(os.path.join(out, "ar-ckpt-last.pth"), "rb").read() == before
    npz = str(tmp_path / "s.npz")
    r = run_py(repo_root, ["VAR/sample.py", f"--ckpt={out}/ar-ckpt-last.pth", "--n=2", f"--out={npz}",
                           "--intra_steps=1"])
    assert r.returncode == 0, r.stderr[-3000:]
    with np.load(npz) as z:
        assert np.isfinite(z["signal"]).all() and z["signal"].shape[0] == 4  # 2 per class, 2 classes


def test_intra_ar_train_resume_guard_and_sampling(repo_root, ds_root, tok_ckpt, tmp_path):
    """VAR/train.py --intra_ar: the run stores its head, a resume with another --intra_ar is one line naming
    both (checkpoint untouched), --intra_ar with --intra_steps is refused, and sample.py samples the run."""
    out = str(tmp_path / "ar")
    r = run_py(repo_root, train_cmd(ds_root, tok_ckpt, out, ["--ep=1", "--intra_ar=3"]))
    assert r.returncode == 0, r.stderr[-3000:]
    state, _ = load_checkpoint(os.path.join(out, "ar-ckpt-last.pth"))
    assert state["trainer"]["config"]["intra_ar"] == 3 and state["trainer"]["config"]["intra_ar_fhat"] == 2  # default
    # the coarser reconstruction at i-2..i+2 (5 latent vectors) -> mu
    assert state["trainer"]["var_wo_ddp"]["intra_ar_head.fc_fhat.weight"].shape[1] == 5 * state["tokenizer"]["vae_config"]["z_channels"]
    z_channels = state["tokenizer"]["vae_config"]["z_channels"]
    assert state["trainer"]["var_wo_ddp"]["intra_ar_head.fc1_w.weight"].shape[1] == 3 * z_channels  # 3 codebook vectors
    assert state["trainer"]["var_wo_ddp"]["intra_ar_head.fc2.weight"].abs().sum() > 0  # trained away from its zero init
    before = open(os.path.join(out, "ar-ckpt-last.pth"), "rb").read()
    r = run_py(repo_root, train_cmd(ds_root, tok_ckpt, out, ["--ep=2", "--intra_ar=2"]))
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error:") and "intra_ar=3" in last and "intra_ar=2" in last
    r = run_py(repo_root, train_cmd(ds_root, tok_ckpt, out, ["--ep=2", "--intra_ar=3", "--intra_ar_fhat=0"]))
    assert r.returncode == 2 and "intra_ar_fhat" in r.stderr.strip().splitlines()[-1]
    r = run_py(repo_root, train_cmd(ds_root, tok_ckpt, str(tmp_path / "both"), ["--intra_ar=2", "--intra_steps=2"]))
    assert r.returncode == 2 and "--intra_ar=2 with --intra_steps=2" in r.stderr.strip().splitlines()[-1]
    assert not os.path.exists(str(tmp_path / "both" / "ar-ckpt-last.pth"))
    assert open(os.path.join(out, "ar-ckpt-last.pth"), "rb").read() == before
    npz = str(tmp_path / "s.npz")
    r = run_py(repo_root, ["VAR/sample.py", f"--ckpt={out}/ar-ckpt-last.pth", "--n=2", f"--out={npz}"])
    assert r.returncode == 0, r.stderr[-3000:]
    with np.load(npz) as z:
        assert np.isfinite(z["signal"]).all() and z["signal"].shape[0] == 4


def test_resume_with_retrained_tokenizer_of_same_config_is_refused(repo_root, ds_root, tok_ckpt, run_a, tmp_path):
    """Same tokenizer config, other weights (e.g. retrained): every token would change under the model."""
    state, _ = load_checkpoint(tok_ckpt)
    with torch.no_grad():
        state["vae_wo_ddp"]["quantize.embedding.weight"] += 0.01
    other = str(tmp_path / "other-tok.pth")
    save_checkpoint(other, state, config=state["tokenizer"])
    out = str(tmp_path / "d")
    os.makedirs(out)
    shutil.copy(os.path.join(run_a, "ar-ckpt-last.pth"), out)
    before = open(os.path.join(out, "ar-ckpt-last.pth"), "rb").read()
    r = run_py(repo_root, train_cmd(ds_root, other, out))
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error:") and "other tokenizer weights" in last and "other-tok.pth" in last
    assert "quantize.embedding.weight" in last and "Traceback" not in r.stderr
    assert open(os.path.join(out, "ar-ckpt-last.pth"), "rb").read() == before  # the run's checkpoint is untouched
# Runs VAR/train.py as torchrun runs it (VAR/ first on sys.path) and, after training, saves this rank's
# parameters as params-rank<RANK>.pt in the folder given first: rank 1 writes no checkpoint of its own.
_PARAM_DUMPER = """
import os, sys
repo, dump_dir = os.getcwd(), sys.argv[1]
sys.path.insert(0, os.path.join(repo, "VAR"))
import torch
import train
built = {}
_build = train.build_everything
def _capture(args):
    out = _build(args)
    built["var"] = out[1].var_wo_ddp
    built["init"] = {k: v.detach().cpu().clone() for k, v in built["var"].state_dict().items()}
    return out
train.build_everything = _capture
rc = train.main(sys.argv[2:])
state = {k: v.detach().cpu().clone() for k, v in built["var"].state_dict().items()}
rank = os.environ.get("RANK", "0")
torch.save({"init": built["init"], "final": state}, os.path.join(dump_dir, "params-rank%s.pt" % rank))
sys.exit(rc or 0)
"""


@pytest.mark.torchrun
def test_torchrun_two_cpu_processes_match_one_process(repo_root, ds_root, tok_ckpt, tmp_path):
    """DDP really averages gradients: after training the two ranks hold identical parameters, and these are
    close to a one-process run on the same global batches (dropout off: depth 1 has no drop path,
    --cond_drop=0); without the DDP wrapper each rank would step on its own half batch.

    The global batch is the whole training split (one step per epoch): with several steps per epoch the
    sampler gives each rank a contiguous half of the epoch's permutation (as upstream), so the global
    batches of a 2-process run group the windows differently from a 1-process run."""
    dumper = str(tmp_path / "dump_params.py")
    with open(dumper, "w") as fh:
        fh.write(_PARAM_DUMPER)
    n_train = len(EEGWindowDataset(ds_root, "train"))
    flags = ["--ep=3", "--depth=1", "--cond_drop=0", "--intra_mix=0", "--save_it=0", f"--bs={n_train + n_train % 2}"]
    runs = {}
    for n_proc in (1, 2):
        out = str(tmp_path / f"p{n_proc}")
        os.makedirs(out)
        launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_proc}"] if n_proc > 1 else []
        r = run_py(repo_root, [*launch, dumper, out, *train_cmd(ds_root, tok_ckpt, out, flags)[1:]], timeout=300)
        assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
        runs[n_proc] = (out, r)
    out2, r2 = runs[2]
    state, _ = load_checkpoint(os.path.join(out2, "ar-ckpt-last.pth"))
    assert state["args"]["world_size"] == 2 and state["args"]["batch_size"] == (n_train + n_train % 2) // 2
    assert (state["epoch"], state["iter"]) == (3, 0)
    assert "backend=gloo" in r2.stderr and "world_size=2" in r2.stderr
    one = torch.load(os.path.join(runs[1][0], "params-rank0.pt"), weights_only=True)
    rank0 = torch.load(os.path.join(out2, "params-rank0.pt"), weights_only=True)
    rank1 = torch.load(os.path.join(out2, "params-rank1.pt"), weights_only=True)
    for k, v in one["final"].items():
        assert torch.equal(rank0["final"][k], rank1["final"][k]), f"ranks hold different {k}"
        torch.testing.assert_close(rank0["final"][k], v, rtol=1e-4, atol=2e-5, msg=f"2 processes vs 1: {k}")
        assert torch.equal(state["trainer"]["var_wo_ddp"][k], rank0["final"][k])  # the checkpoint is rank 0's
    # same start, and one epoch moves the parameters far beyond the tolerance above
    assert all(torch.equal(rank0["init"][k], v) for k, v in one["init"].items())
    assert max(float((one["final"][k] - v).abs().max()) for k, v in one["init"].items()) > 1e-3


def test_sampling_units_shapes_and_determinism(run_a, ds_root, tmp_path, repo_root):
    import sample
    ckpt = os.path.join(run_a, "ar-ckpt-best.pth")
    out = str(tmp_path / "s.npz")
    png = str(tmp_path / "s.png")
    # the plain decode (--no_gains): the samples' band gains are checked in test_samples_get_the_gain_measured_on_...
    assert sample.main([f"--ckpt={ckpt}", "--n=3", f"--out={out}", "--cfg=2", "--top_k=8", "--top_p=0.9", "--seed=5",
                        f"--plot={png}", f"--data_path={ds_root}", "--no_gains"]) == 0
    d = np.load(out)
    ds = EEGWindowDataset(ds_root, "val")
    N, K, C, T = 6, ds.n_stages, ds.n_channels, ds.n_times
    assert d["signal"].shape == (N, C, T) and d["cumulative_bands"].shape == (N, K, C, T)
    assert d["labels"].tolist() == [0, 0, 0, 1, 1, 1] and list(d["class_names"]) == ["rest", "arithmetic"]
    assert float(d["sfreq"]) == ds.sfreq and list(d["ch_names"]) == list(ds.ch_names)
    np.testing.assert_allclose(d["bands"], ds.bands)
    assert os.path.getsize(png) > 10_000
    # units: the file holds µV = the model's output (model units) times the tokenizer's uv_scale
    var, vae, meta = sample.load_var_checkpoint(ckpt)
    # the run has power levels (the default --level_clusters): the file records each window's, drawn with the seed
    assert var.num_levels == 4 and d["levels"].shape == (N,) and 0 <= d["levels"].min() and d["levels"].max() < 4
    gen = torch.Generator().manual_seed(5)
    assert d["levels"].tolist() == var.resolve_levels(torch.tensor([0, 0, 0, 1, 1, 1]), None, gen).tolist()
    x_BCT = var.autoregressive_infer_cfg(B=N, label_B=torch.tensor([0, 0, 0, 1, 1, 1]), g_seed=5, cfg=2, top_k=8,
                                         top_p=0.9, temperature=sample.DEFAULT_TEMPERATURE)  # one batch of N, seed + 0
    np.testing.assert_allclose(d["signal"], x_BCT.numpy() * meta["tokenizer"]["uv_scale"], rtol=1e-5, atol=1e-4)
    assert 0.1 * meta["tokenizer"]["uv_scale"] < d["signal"].std() < 10 * meta["tokenizer"]["uv_scale"]
    # the last cumulative stage is the full-spectrum signal
    np.testing.assert_allclose(d["cumulative_bands"][:, -1], d["signal"], rtol=1e-5, atol=1e-4)
    # same seed -> same windows; another seed -> other windows
    again = sample.generate(var, vae, meta, [0, 0, 0, 1, 1, 1], cfg=2, top_k=8, top_p=0.9, seed=5, stages=False,
                            gains=False)
    other = sample.generate(var, vae, meta, [0, 0, 0, 1, 1, 1], cfg=2, top_k=8, top_p=0.9, seed=6, stages=False,
                            gains=False)
    np.testing.assert_array_equal(again["signal"], d["signal"])
    assert not np.allclose(other["signal"], d["signal"])
    # no silent overwrite; bad class and missing checkpoint are one-line errors
    r = run_py(repo_root, ["VAR/sample.py", f"--ckpt={ckpt}", f"--out={out}"])
    assert r.returncode == 2 and "--overwrite" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_py(repo_root, ["VAR/sample.py", f"--ckpt={ckpt}", f"--out={tmp_path}/t.npz", "--class_label=sleep"])
    assert r.returncode == 2 and "rest" in r.stderr.strip().splitlines()[-1]
    r = run_py(repo_root, ["VAR/sample.py", f"--ckpt={tmp_path}/none.pth", f"--out={tmp_path}/t.npz"])
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("sample.py: error: --ckpt=")


def test_sample_takes_a_run_folder_and_writes_nothing_when_a_later_step_fails(run_a, tmp_path, repo_root):
    import sample
    out = tmp_path / "s.npz"
    assert sample.main([f"--ckpt={run_a}", "--n=2", f"--out={out}", "--seed=1"]) == 0  # a folder: its best checkpoint
    best = tmp_path / "b.npz"
    sample.main([f"--ckpt={os.path.join(run_a, 'ar-ckpt-best.pth')}", "--n=2", f"--out={best}", "--seed=1"])
    np.testing.assert_array_equal(np.load(out)["signal"], np.load(best)["signal"])
    r = run_py(repo_root, ["VAR/sample.py", f"--ckpt={tmp_path}", f"--out={tmp_path}/t.npz"])
    assert r.returncode == 2 and "is a folder without ar-ckpt-best.pth or ar-ckpt-last.pth" in r.stderr
    empty = tmp_path / "empty_dataset"
    empty.mkdir()
    again = tmp_path / "again.npz"
    r = run_py(repo_root, ["VAR/sample.py", f"--ckpt={run_a}", f"--out={again}", f"--plot={tmp_path}/a.png",
                           f"--data_path={empty}"])
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert not again.exists() and not (tmp_path / "a.png").exists()  # so the same command can simply be re-run


def test_benchmark_harness_quick(ds_root, tmp_path):
    """benchmarks/bench_var.py keeps working (tiny settings; the numbers are not judged here)."""
    from benchmarks import bench_var
    res = bench_var.main(["--quick", "--results-dir", str(tmp_path), "--data-root", ds_root, "--ep", "1",
                          "--throughput-depths", "2", "--cfgs", "1.5"])
    assert os.path.isfile(tmp_path / "var.json") and os.path.isfile(tmp_path / "var_psd.png")
    assert set(res["generation"]["1.5"]) == {"rest", "arithmetic"}
    for q in res["generation"]["1.5"].values():
        assert set(q["psd_error_db"]) == {"delta", "theta", "alpha", "beta", "gamma"}
    tp = res["sampling_throughput_cpu"]["2"]
    assert tp["windows_per_s"] == pytest.approx(tp["batch"] / tp["seconds_per_batch"])
    assert [d["ep"] for d in res["train"]["val_curve"]] == [1]


def test_run_keeps_its_level_clusters_and_refuses_another_count(repo_root, ds_root, tok_ckpt, run_a, tmp_path):
    """The default run has 4 power levels per class: the checkpoint holds the clusters, the model's prior is
    the share of each level among the training windows (recomputed here from the windows), and a resume with
    another --level_clusters is a one-line error."""
    from utils.eeg_levels import LevelClusters, window_levels
    state, _ = load_checkpoint(os.path.join(run_a, "ar-ckpt-best.pth"))
    clusters = LevelClusters.from_dict(state["levels"])
    assert (clusters.num_classes, clusters.num_levels) == (2, 4)
    ds = EEGWindowDataset(ds_root, "train")
    x = np.stack([ds.window(i).stages_KCT[-1] for i in range(len(ds))])
    lv = clusters.assign(window_levels(x, ds.sfreq, ds.bands), ds.labels)
    share = np.stack([np.bincount(lv[ds.labels == c], minlength=4) / (ds.labels == c).sum() for c in (0, 1)])
    np.testing.assert_allclose(state["trainer"]["var_wo_ddp"]["level_prior"].numpy(), share, atol=1e-6)
    assert (share > 0).all()
    last = resume_refused(repo_root, ds_root, tok_ckpt, run_a, str(tmp_path / "c"), ["--level_clusters=2"])
    assert "--level_clusters=4" in last and "asks for 2" in last


def test_sample_and_complete_level_flags(run_a, ds_root, tmp_path):
    import complete
    import sample
    from utils.eeg_levels import LevelClusters, observed_levels
    from utils.errors import UserError
    out = str(tmp_path / "s.npz")
    assert sample.main([f"--ckpt={run_a}", "--n=3", f"--out={out}", "--level=2"]) == 0
    assert np.load(out)["levels"].tolist() == [2] * 6
    for bad, msg in (("4", r"has levels 0..3"), ("loud", r"expected 'draw', 'unknown' or an index 0..3")):
        with pytest.raises(UserError, match=msg):
            sample.main([f"--ckpt={run_a}", "--n=1", f"--out={tmp_path}/x.npz", f"--level={bad}"])
    # completion: the level of each window is estimated from what is observed of it
    out = str(tmp_path / "c.npz")
    assert complete.main(["--mode=fill_gap", f"--ckpt={run_a}", f"--data_path={ds_root}", "--n=4", "--n_samples=1",
                          "--gap=0.5:1.5", "--class_label=own", f"--out={out}"]) == 0
    d = np.load(out)
    state, _ = load_checkpoint(os.path.join(run_a, "ar-ckpt-best.pth"))
    want = observed_levels(LevelClusters.from_dict(state["levels"]), np.nan_to_num(d["observed"]), d["labels"],
                           float(d["sfreq"]), mask_NT=d["mask"])
    assert d["levels"].tolist() == want.tolist()
    assert complete.main(["--mode=complete_bands", f"--ckpt={run_a}", f"--data_path={ds_root}", "--n=2", "--k=2",
                          "--n_samples=1", f"--out={tmp_path}/b.npz"]) == 0  # null class: level unknown
    assert np.load(f"{tmp_path}/b.npz")["levels"].tolist() == [-1, -1]
    with pytest.raises(UserError, match="a level needs a class"):
        complete.main(["--mode=complete_bands", f"--ckpt={run_a}", f"--data_path={ds_root}", "--n=2", "--k=2",
                       "--level=1", f"--out={tmp_path}/e.npz"])


def test_sample_temperature_flag(run_a, tmp_path):
    """--temperature reaches the draws (the same seed at another temperature draws other windows; 1 is the default
    draw), is recorded per scale, and a value the model cannot follow is one line naming it."""
    import sample
    from utils.errors import UserError
    n_scales = len(load_checkpoint(os.path.join(run_a, "ar-ckpt-best.pth"))[0]["trainer"]["config"]["patch_nums"])
    paths = {t: str(tmp_path / f"t{t}.npz") for t in ("1", "1.0", "0.5")}
    for t, path in paths.items():
        assert sample.main([f"--ckpt={run_a}", "--n=2", f"--out={path}", "--seed=2", f"--temperature={t}"]) == 0
    z = {t: np.load(p) for t, p in paths.items()}
    assert z["1"]["temperature"].tolist() == [1.0] * n_scales and z["0.5"]["temperature"].tolist() == [0.5] * n_scales
    np.testing.assert_array_equal(z["1"]["signal"], z["1.0"]["signal"])
    assert not np.allclose(z["1"]["signal"], z["0.5"]["signal"])
    for bad, msg in (("0", "positive"), ("warm", "could not convert"), ("1,1", f"2 values but this model has {n_scales}")):
        with pytest.raises(UserError, match=f"--temperature={bad}: .*{msg}"):
            sample.main([f"--ckpt={run_a}", "--n=1", f"--out={tmp_path}/x.npz", f"--temperature={bad}"])


def test_samples_get_the_band_gain_of_their_class_and_level(repo_root, ds_root, tok_ckpt, tmp_path):
    """With a tokenizer that sends band-gain codes, the run stores per class and level the gain (dB) that gives the
    training windows' decodes their inputs' band power back (recomputed here with numpy), and sample.py scales each
    band of every sample's decode by its class and level's gain (a partial decode only in its own bands)."""
    import sample
    from utils.eeg_levels import LevelClusters, window_levels
    from vae_checkpoint import load_vae
    state, _ = load_checkpoint(tok_ckpt)
    state["tokenizer"] = dict(state["tokenizer"], gain_step_db=2.0, gain_max_steps=2)
    tok = str(tmp_path / "tok" / "vae-ckpt-best.pth")
    save_checkpoint(tok, state, config=state["tokenizer"])
    out = str(tmp_path / "run")
    r = run_py(repo_root, train_cmd(ds_root, tok, out))
    assert r.returncode == 0, r.stderr[-3000:]
    ck, _ = load_checkpoint(os.path.join(out, "ar-ckpt-best.pth"))
    table = np.asarray(ck["level_gain_db"])
    # recomputed: groups by class and level, sums of band power from numpy FFTs of the inputs and their decodes
    ds = EEGWindowDataset(ds_root, "train")
    vae, info = load_vae(tok)
    x_uv = np.stack([ds.window(i).stages_KCT[-1] for i in range(len(ds))])
    x = x_uv / info["uv_scale"]
    with torch.no_grad():
        rec = vae.idxBl_to_eeg(vae.eeg_to_idxBl(torch.from_numpy(x).float()), last_one=True).double().numpy()
    lv = LevelClusters.from_dict(ck["levels"]).assign(window_levels(x_uv, ds.sfreq, ds.bands), ds.labels)
    freqs = np.fft.rfftfreq(ds.n_times, 1 / ds.sfreq)
    masks = [(freqs >= lo) & ((freqs <= hi) if k == len(ds.bands) - 1 else (freqs < hi))
             for k, (lo, hi) in enumerate(ds.bands)]

    def band_power(z):
        P = np.abs(np.fft.rfft(z, axis=-1)) ** 2
        return np.stack([P[..., m].sum(-1) for m in masks], -1)
    Px, Pr = band_power(x), band_power(rec)
    assert table.shape == (3, 5, ds.n_channels, len(ds.bands))
    for c, lvl in ((0, 0), (1, 3), (0, 4), (2, 4)):
        m = (ds.labels == c if c < 2 else np.ones(len(ds), bool)) & (lv == lvl if lvl < 4 else True)
        want = 10 * np.log10(Px[m].sum(0) / Pr[m].sum(0))
        np.testing.assert_allclose(table[c, lvl], want, atol=2e-3)
    assert np.abs(table).max() > 0.5  # the random-weight tokenizer is far off: the gains are not all ~0
    # sampling: the same draws with and without the gains
    a, b = str(tmp_path / "a.npz"), str(tmp_path / "b.npz")
    assert sample.main([f"--ckpt={out}", "--n=2", f"--out={a}", "--seed=3", "--no_calib"]) == 0
    assert sample.main([f"--ckpt={out}", "--n=2", f"--out={b}", "--seed=3", "--no_gains"]) == 0
    da, db = np.load(a), np.load(b)
    assert bool(da["band_gains"]) and not bool(db["band_gains"]) and not bool(da["calibrated"])
    np.testing.assert_array_equal(da["levels"], db["levels"])
    Fa, Fb = np.fft.rfft(da["signal"].astype(np.float64), axis=-1), np.fft.rfft(db["signal"].astype(np.float64), axis=-1)
    Sa = np.fft.rfft(da["cumulative_bands"][:, 1].astype(np.float64), axis=-1)
    Sb = np.fft.rfft(db["cumulative_bands"][:, 1].astype(np.float64), axis=-1)
    for i, (c, lvl) in enumerate(zip(da["labels"], da["levels"])):
        for k, m in enumerate(masks):
            amp = 10 ** (table[c, lvl, :, k:k + 1] / 20)
            np.testing.assert_allclose(Fa[i][:, m], Fb[i][:, m] * amp, rtol=1e-3, atol=1e-3 * np.abs(Fb[i]).max())
            np.testing.assert_allclose(Sa[i][:, m], Sb[i][:, m] * (amp if k < 2 else 1.0), rtol=1e-3,
                                       atol=1e-3 * np.abs(Sb[i]).max())


def test_samples_get_the_gain_measured_on_their_own_draws(repo_root, ds_root, tok_ckpt, tmp_path):
    """At the end of training the run draws --calib_n samples per class and stores, per class and level, the gain
    that gives their plain decodes the training windows' mean dB band power. Recomputed here: the same draws made
    again, band powers and group means with numpy, levels from the stored clusters. sample.py applies it by default
    (the tokenizer has no band-gain codes: the calibration needs none). A finished run whose checkpoints lack it gets
    the same table when re-run; with --calib_n=0 it stays without."""
    import sample
    from utils.eeg_levels import LevelClusters, window_levels
    out = str(tmp_path / "run")
    r = run_py(repo_root, train_cmd(ds_root, tok_ckpt, out, ["--calib_n=16"]))
    assert r.returncode == 0, r.stderr[-3000:]
    best = os.path.join(out, "ar-ckpt-best.pth")
    ck, _ = load_checkpoint(best)
    table, rec = np.asarray(ck["sample_gain_db"]), ck["sample_calib"]
    assert rec["n_per_class"] == 16 and rec["cfg"] == sample.DEFAULT_CFG
    assert set(rec["temperature"]) == {sample.DEFAULT_TEMPERATURE} and "level_gain_db" not in ck
    var, vae, meta = sample.load_var_checkpoint(best)
    nc, nl = var.num_classes, var.num_levels
    gen = sample.generate(var, vae, meta, [c for c in range(nc) for _ in range(16)], seed=rec["seed"], stages=False,
                          gains=False, temperature=rec["temperature"], cfg=rec["cfg"])
    ds = EEGWindowDataset(ds_root, "train")
    x_uv = np.stack([ds.window(i).stages_KCT[-1] for i in range(len(ds))])
    lv = LevelClusters.from_dict(ck["levels"]).assign(window_levels(x_uv, ds.sfreq, ds.bands), ds.labels)
    freqs = np.fft.rfftfreq(ds.n_times, 1 / ds.sfreq)
    # one column below the first band (DC included), then one per band
    masks = [freqs < ds.bands[0][0]] + [(freqs >= lo) & ((freqs <= hi) if k == len(ds.bands) - 1 else (freqs < hi))
                                        for k, (lo, hi) in enumerate(ds.bands)]

    def band_db(z):
        P = np.abs(np.fft.rfft(np.asarray(z, dtype=np.float64), axis=-1)) ** 2
        return 10 * np.log10(np.stack([P[..., m].sum(-1) for m in masks], -1))
    R, G = band_db(x_uv), band_db(gen["signal"])  # µV both: a common unit cancels in the difference
    assert table.shape == (nc + 1, nl + 1, ds.n_channels, len(ds.bands) + 1)
    checked = 0
    for c in range(nc + 1):
        for lvl in range(nl + 1):
            r = (ds.labels == c if c < nc else np.ones(len(ds), bool)) & (lv == lvl if lvl < nl else True)
            g = (gen["labels"] == c if c < nc else True) & (gen["levels"] == lvl if lvl < nl else True)
            if r.sum() >= 8 and np.sum(g) >= 8:
                np.testing.assert_allclose(table[c, lvl], R[r].mean(0) - G[g].mean(0), atol=2e-3)
                checked += 1
    assert checked >= nc + 2  # every class's pooled column, the pooled row, and at least one level of its own
    # sample.py: every band of every window scaled by its class and level's gain
    a, b = str(tmp_path / "a.npz"), str(tmp_path / "b.npz")
    assert sample.main([f"--ckpt={out}", "--n=2", f"--out={a}", "--seed=3"]) == 0
    assert sample.main([f"--ckpt={out}", "--n=2", f"--out={b}", "--seed=3", "--no_gains"]) == 0
    da, db = np.load(a), np.load(b)
    assert bool(da["calibrated"]) and bool(da["band_gains"]) and not bool(db["calibrated"])
    assert masks[0].sum() >= 1 and np.abs(table[..., 0]).max() > 0  # the bins below the first band get a gain too
    Fa, Fb = np.fft.rfft(da["signal"].astype(np.float64), axis=-1), np.fft.rfft(db["signal"].astype(np.float64), axis=-1)
    for i, (c, lvl) in enumerate(zip(da["labels"], da["levels"])):
        for k, m in enumerate(masks):
            amp = 10 ** (table[c, lvl, :, k:k + 1] / 20)
            np.testing.assert_allclose(Fa[i][:, m], Fb[i][:, m] * amp, rtol=1e-3, atol=1e-3 * np.abs(Fb[i]).max())
    with pytest.raises(CheckpointError, match="columns"):  # a table of another layout is refused, not misapplied
        sample.sample_gain_table(dict(meta, sample_gain_db=table[..., 1:].tolist()))
    # a finished run without the table: --calib_n=0 leaves it so, the default re-run measures it again
    before = {}
    for name in ("ar-ckpt-best.pth", "ar-ckpt-last.pth"):
        path = os.path.join(out, name)
        st, _ = load_checkpoint(path)
        config = st.pop("meta")["config"]
        before[name] = np.asarray(st.pop("sample_gain_db")), st.pop("sample_calib")
        save_checkpoint(path, st, config=config)
    r = run_py(repo_root, train_cmd(ds_root, tok_ckpt, out, ["--calib_n=0"]))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "sample_gain_db" not in load_checkpoint(best)[0]
    r = run_py(repo_root, train_cmd(ds_root, tok_ckpt, out, ["--calib_n=16"]))
    assert r.returncode == 0, r.stderr[-3000:]
    for name, (tab, rec_before) in before.items():
        st = load_checkpoint(os.path.join(out, name))[0]
        np.testing.assert_array_equal(np.asarray(st["sample_gain_db"]), tab)
        assert st["sample_calib"] == rec_before


def test_bench_samples_quick_judges_gained_and_plain_samples(shared_data, repo_root, tok_ckpt, tmp_path):
    """benchmarks/bench_samples.py trains the default VAR through VAR/train.py, samples with and without the band
    gains, and judges both against the real windows; its floor row is psd_band_error_db of the two real splits."""
    from benchmarks import bench_samples
    from utils.eeg_metrics import psd_band_error_db
    from utils.main_report import load_split
    # two subjects per split, so the grouped C2ST has two recordings of each class on each side
    ds_root = str(tmp_path / "ds4")
    d = os.path.join(shared_data, "physionet-eegmat")
    r = run_py(repo_root, ["-m", "utils.data_eeg", "build", "--inputs", *(os.path.join(d, f"Subject0{s}_{k}.edf")
                                                                           for s in range(4) for k in (1, 2)),
                           "--out", ds_root, "--window-sec", "2.56", "--split-by", "subject", "--val-groups",
                           "Subject02,Subject03", "--label-from", r"regex:_1\.edf$=rest,_2\.edf$=arithmetic",
                           "--progress", "off"])
    assert r.returncode == 0, r.stderr[-2000:]
    state, _ = load_checkpoint(tok_ckpt)
    state["tokenizer"] = dict(state["tokenizer"], gain_step_db=2.0, gain_max_steps=2)
    tok = str(tmp_path / "tok" / "vae-ckpt-best.pth")
    save_checkpoint(tok, state, config=state["tokenizer"])
    res = bench_samples.main(["--quick", "--results-dir", str(tmp_path / "res"), "--data-root", ds_root,
                              "--tokenizers", f"gains={tok}"])
    assert os.path.isfile(tmp_path / "res" / "samples.json")
    assert all(os.path.getsize(tmp_path / "res" / f) > 0 for f in ("samples_psd.png", "samples_band_power.png"))
    r = res["tokenizers"]["gains"]
    assert set(r) >= {"plain decode", "with band gains", "calibrated gains"} and r["epoch"] == 1
    # sample.py's default temperature under the plain names, the model's own distribution (1) beside it
    import sample
    assert res["temperature"][0] == sample.DEFAULT_TEMPERATURE and res["other_temperatures"][0][0] == 1.0
    assert (r["plain decode, temperature 1"]["vs_val"]["per_class"]["rest"]["generated"]["psd_error_db"]
            != r["plain decode"]["vs_val"]["per_class"]["rest"]["generated"]["psd_error_db"])
    plain, gained = r["plain decode"]["vs_val"]["per_class"], r["with band gains"]["vs_val"]["per_class"]
    assert set(plain) == set(gained) == {"rest", "arithmetic"}
    assert plain["rest"]["generated"]["psd_error_db"] != gained["rest"]["generated"]["psd_error_db"]
    va, vl, vg = load_split(ds_root, "val", 64)
    tr, tl, tg = load_split(ds_root, "train", 64)
    want = psd_band_error_db(va[vl == 0, -1], tr[tl == 0, -1], 100.0, EEGWindowDataset(ds_root, "val").bands,
                             f_max=45.0)
    got = plain["rest"]["real train (floor)"]["psd_error_db"]
    assert got == pytest.approx(want)
    # 2 temperatures x 3 decodes (plain, the codes' gains, the samples' own gains) x 2 classes x 2 refs
    assert len(res["report"]["tables"][0]["rows"]) == 2 * 3 * 2 * 2
    calib = r["calibrated gains"]["vs_val"]["per_class"]
    assert calib["rest"]["generated"]["psd_error_db"] != gained["rest"]["generated"]["psd_error_db"]
    # spectral shape: the floor is the training split's reconstructions against the held-out split's, here
    # reconstructed through the tokenizer's encode + decode path (not the benchmark's token round trip)
    from utils.eeg_metrics import spectral_shape
    from vae_checkpoint import load_vae
    vae, info = load_vae(tok)
    uv = info["uv_scale"]
    with torch.no_grad():
        rv = vae.eeg_to_reconstructed_eeg(torch.from_numpy(va[vl == 0, -1] / uv).float(), last_one=True).double().numpy() * uv
        rt = vae.eeg_to_reconstructed_eeg(torch.from_numpy(tr[tl == 0, -1] / uv).float(), last_one=True).double().numpy() * uv
    sh = spectral_shape(rv, rt, 100.0, [4.0, 8.0, 13.0, 30.0])
    floor = r["plain decode"]["shape"]["val/rest"]["floor"]
    assert floor["mean_abs_db"] == pytest.approx(sh["mean_abs_db"], abs=1e-3)
    assert floor["max_edge_step_db"] == pytest.approx(max(abs(v) for v in sh["edge_step_db"].values()), abs=1e-3)
    # issue 13's C2ST against the reconstructions: the floor is the other split's reconstructions (subject-grouped
    # folds), its phase-randomised twin keeps each window's spectrum, so its band-power features barely move
    from utils.eeg_c2st import c2st_auc
    auc = r["plain decode"]["shape"]["val/rest"]["c2st_auc"]
    bands = EEGWindowDataset(ds_root, "val").bands
    assert auc["floor"] == pytest.approx(c2st_auc(rv, rt, 100.0, groups_a=vg[vl == 0], groups_b=tg[tl == 0],
                                                  bands=bands, f_max=45.0).auc, abs=1e-6)
    assert set(auc) == {"generated", "floor", "phase-randomised floor", "floor, ungrouped",
                        "phase-randomised floor, ungrouped"} and all(0 <= v <= 1 for v in auc.values())
    # the floors entered as the samples are: each window its own draw, overlapping windows of one recording together.
    # The ids are checked against the headers pair by pair: overlapping windows share an id, windows of two
    # recordings never do, and the windows of one id form a chain of overlaps
    ds_t = EEGWindowDataset(ds_root, "train")
    heads = [ds_t.headers[int(i)] for i in np.unique(np.linspace(0, len(ds_t) - 1, min(64, len(ds_t))).round())]
    dg = load_split(ds_root, "train", 64, with_draws=True)[3]
    assert len(dg) == len(heads) == len(tl)
    n_t = ds_t.n_times
    for i, hi in enumerate(heads):
        for j, hj in enumerate(heads):
            if hi.source != hj.source:
                assert dg[i] != dg[j]
            elif abs(hi.start - hj.start) < n_t:
                assert dg[i] == dg[j]
    for g in set(dg):
        st = sorted(h.start for h, gi in zip(heads, dg) if gi == g)
        assert all(b - a < n_t for a, b in zip(st, st[1:]))
    assert len(set(dg)) > len(set(tg))  # here some windows of a recording do not overlap
    assert auc["floor, ungrouped"] == pytest.approx(c2st_auc(rv, rt, 100.0, groups_a=vg[vl == 0], groups_b=dg[tl == 0],
                                                             bands=bands, f_max=45.0).auc, abs=1e-6)
    per_class = r["plain decode"]["vs_val"]["per_class"]["rest"]
    assert per_class["real train, ungrouped"]["c2st_auc"] == pytest.approx(
        c2st_auc(va[vl == 0, -1], tr[tl == 0, -1], 100.0, groups_a=vg[vl == 0], groups_b=dg[tl == 0], bands=bands,
                 f_max=45.0).auc, abs=1e-6)
    assert len(res["report"]["tables"][1]["rows"]) == 2 * 3 * 2 * 2
    # the same C2ST on one kind of feature: band powers are the first channels x bands columns
    from utils.eeg_c2st import c2st_features
    n_bp = va.shape[2] * len(bands)
    F_v, F_t = (c2st_features(x, 100.0, bands, f_max=45.0) for x in (rv, rt))
    by = r["plain decode"]["shape"]["val/rest"]["c2st_auc_by_features"]
    for kind, cols in (("band power", slice(0, n_bp)), ("channel correlation", slice(n_bp, None))):
        assert by[kind]["floor"] == pytest.approx(c2st_auc(rv, rt, 100.0, groups_a=vg[vl == 0], groups_b=tg[tl == 0],
                                                           features=(F_v[:, cols], F_t[:, cols])).auc, abs=1e-6)
    # spread inside a power level: one ratio per band and class; the third table has a row per variant and class
    assert set(r["with band gains"]["level_spread"]) == {"rest", "arithmetic"}
    assert all(len(v) == len(bands) and all(x > 0 for x in v) for v in r["with band gains"]["level_spread"].values())
    assert len(res["report"]["tables"][2]["rows"]) == 2 * 3 * 2
    # the power below the first band, which the C2ST features never see, for the samples and the real windows
    from utils.eeg_metrics import low_power_share
    low = r["calibrated gains"]["low_power_share"]["rest"]
    assert low["real train"] == pytest.approx(low_power_share(tr[tl == 0, -1], 100.0, bands[0][0]), rel=1e-9)
    assert 0 <= low["generated"] <= 1 and len(res["report"]["tables"][2]["rows"][0]) == 7
    by_row = res["report"]["tables"][2]["rows"][0][3]  # band powers: the grouped and the ungrouped floors
    by_bp = r["plain decode"]["shape"]["val/rest"]["c2st_auc_by_features"]["band power"]
    assert by_row == (f"{by_bp['generated']:.3f} ({by_bp['floor']:.3f}; {by_bp['phase-randomised floor']:.3f}; "
                      f"ungrouped {by_bp['floor, ungrouped']:.3f}; {by_bp['phase-randomised floor, ungrouped']:.3f})")

"""Bad-input sweep over every command-line entry point: bad flags and bad files -> exit code 2 and one
``prog: error: ...`` line on stderr naming the problem, never a traceback; a malicious checkpoint is
refused by every loader without running its code.

Cheap cases run in-process through :func:`utils.cli.run_cli` (as ``python -m ...`` would run them); a
few run as real subprocesses. :data:`CASES` is the table; ``len(CASES)`` per entry point is reported in
issue 8's closing note.
"""
from __future__ import annotations

import collections
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from utils.checkpoint import save_checkpoint
from utils.cli import run_cli
from utils.eeg_bands import scale_lengths_for_bands

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Evil:
    """Unpickling this runs ``os.mkdir(marker)``: what a malicious checkpoint would do under plain pickle."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def F(tmp_path_factory) -> dict:
    """Good and bad files shared by every case (paths by name)."""
    from models import VQVAE
    from prototypes import eeg_scale_ar_pipeline as pipeline
    from prototypes.synthetic_eeg import SyntheticConfig, make_dataset
    from utils.eeg_dataset import EEGWindowDataset
    from vae_checkpoint import TOKENIZER_KEY, tokenizer_info
    base = tmp_path_factory.mktemp("sweep")
    f: dict = {"base": str(base), "marker": str(base / "PWNED")}
    f["ds"] = str(base / "ds")
    make_dataset(f["ds"], SyntheticConfig(n_channels=2, sfreq=100.0, window_sec=1.28, n_windows=8,
                                          windows_per_recording=4, val_fraction=0.5, seed=0))
    f["ds128"] = str(base / "ds128")  # another sampling frequency (and length)
    make_dataset(f["ds128"], SyntheticConfig(n_channels=2, sfreq=125.0, window_sec=1.28, n_windows=8,
                                             windows_per_recording=4, val_fraction=0.5, seed=0))
    f["ds3ch"] = str(base / "ds3ch")  # another channel count
    make_dataset(f["ds3ch"], SyntheticConfig(n_channels=3, sfreq=100.0, window_sec=1.28, n_windows=8,
                                             windows_per_recording=4, val_fraction=0.5, seed=0))
    f["ds_nan"] = str(base / "ds_nan")  # one window whose signal holds a NaN (its header is fine)
    shutil.copytree(f["ds"], f["ds_nan"])
    for split in ("train", "val"):
        first = sorted(os.listdir(os.path.join(f["ds_nan"], split)))[0]
        path = os.path.join(f["ds_nan"], split, first)
        with np.load(path, allow_pickle=False) as npz:
            members = {k: npz[k] for k in npz.files}
        members["signal"][0, 3] = np.nan
        members["cumulative_bands"][-1, 0, 3] = np.nan
        np.savez(path, **members)
        f[f"nan_{split}"] = first
    f["ds_corrupt"] = str(base / "ds_corrupt")  # one train file that is not an npz at all
    shutil.copytree(f["ds"], f["ds_corrupt"])
    f["corrupt_name"] = sorted(os.listdir(os.path.join(f["ds_corrupt"], "train")))[0]
    with open(os.path.join(f["ds_corrupt"], "train", f["corrupt_name"]), "wb") as fh:
        fh.write(b"\x00" * 64)
    f["empty_dir"] = str(base / "empty_dir")
    os.makedirs(f["empty_dir"])
    f["empty"] = str(base / "empty.pth")
    open(f["empty"], "wb").close()
    f["text"] = str(base / "notes.pth")
    with open(f["text"], "w", encoding="utf-8") as fh:
        fh.write("this is not a checkpoint\n")
    f["missing"] = str(base / "does_not_exist.pth")
    f["evil"] = str(base / "evil.pth")
    torch.save({"model": _Evil(f["marker"])}, f["evil"])
    f["list_ckpt"] = str(base / "list.pth")  # loads safely but is not a dict
    torch.save([torch.zeros(2)], f["list_ckpt"])
    # a tiny tokenizer (random weights, data-initialised codebooks)
    ds = EEGWindowDataset(f["ds"], "train")
    pns = scale_lengths_for_bands(ds.bands, ds.sfreq, ds.n_times // 4)
    torch.manual_seed(0)
    vae = VQVAE(in_channels=2, vocab_size=8, z_channels=4, ch=8, ch_mult=(1, 2, 2), num_res_blocks=1,
                v_patch_nums=pns, tokens_per_pos=1, test_mode=True)
    x_NCT = torch.stack([ds[i][0][-1] for i in range(len(ds))])
    with torch.no_grad():
        vae.quantize.init_codebook_from_(vae.encode_BCl(x_NCT / 10.0), generator=torch.Generator().manual_seed(0))
    info = tokenizer_info(vae, sfreq=ds.sfreq, bands=ds.bands.tolist(), ch_names=ds.ch_names, uv_scale=10.0,
                          n_extra_coarse=0, tokens_per_nyquist=1.0)
    f["tok"] = str(base / "vae-ckpt-best.pth")
    save_checkpoint(f["tok"], {TOKENIZER_KEY: info, "vae_wo_ddp": vae.state_dict(), "epoch": 1, "iter": 0},
                    config=info)
    f["var"] = str(base / "ar-ckpt-best.pth")  # a random VAR on that dataset's layout (complete.py, benchmarks)
    from conftest import save_tiny_var_checkpoint
    save_tiny_var_checkpoint(f["ds"], f["var"])
    f["tok_trunc"] = str(base / "tok_truncated.pth")
    with open(f["tok"], "rb") as src, open(f["tok_trunc"], "wb") as dst:
        dst.write(src.read()[:2000])
    # a prototype run: last.pt and demo_prediction.pt
    f["proto"] = str(base / "proto")
    assert pipeline.main(["--data-root", f["ds"], "--checkpoint-dir", f["proto"], "--epochs", "1", "--batch-size", "8",
                          "--d-model", "8", "--nhead", "2", "--num-layers", "1", "--device", "cpu"]) == 0
    f["proto_last"] = os.path.join(f["proto"], "last.pt")
    f["demo"] = os.path.join(f["proto"], "demo_prediction.pt")
    # output folders holding something that must not be overwritten / checkpoints that must be refused
    f["exists_npz"] = str(base / "exists.npz")
    np.savez(f["exists_npz"], x=np.zeros(1))
    f["exists_png"] = str(base / "exists.png")
    open(f["exists_png"], "wb").write(b"png")
    for name, ckpt in (("out_evil_ar", "ar-ckpt-last.pth"), ("out_evil_vae", "vae-ckpt-last.pth")):
        f[name] = str(base / name)
        os.makedirs(f[name])
        shutil.copy(f["evil"], os.path.join(f[name], ckpt))
    f["out_trunc_vae"] = str(base / "out_trunc_vae")
    os.makedirs(f["out_trunc_vae"])
    shutil.copy(f["tok_trunc"], os.path.join(f["out_trunc_vae"], "vae-ckpt-last.pth"))
    f["edf_empty"] = str(base / "empty.edf")
    open(f["edf_empty"], "wb").close()
    f["edf_text"] = str(base / "text.edf")
    with open(f["edf_text"], "w", encoding="utf-8") as fh:
        fh.write("0 1 2 3\n" * 50)
    return f


# ------------------------------------------------------------------------------------------------ entry points
def _main(name: str):
    """The ``main(argv)`` of entry point ``name`` and its ``prog`` as run_cli reports it."""
    if name == "pipeline":
        from prototypes import eeg_scale_ar_pipeline as m
        return m.main, "eeg_scale_ar_pipeline"
    if name == "plot_rollout":
        from prototypes.scripts import plot_rollout as m
        return m.main, "plot_rollout"
    if name == "synthetic_eeg":
        from prototypes import synthetic_eeg as m
        return m.main, "synthetic_eeg"
    if name == "data_eeg":
        from utils import data_eeg as m
        return m.main, m.PROG
    if name == "train_vae":
        import train_vae as m
        return m.main_training, "train_vae.py"
    if name == "train":
        import train as m
        return m.main, "train.py"
    if name == "reconstruct":
        import reconstruct as m
        return m.main, "reconstruct.py"
    if name == "sample":
        import sample as m
        return m.main, "sample.py"
    if name == "run_all":
        from benchmarks import run_all as m
        return m.main, "python -m benchmarks.run_all"
    if name == "bench_tokenizer":
        from benchmarks import bench_tokenizer as m
        return (lambda argv: (m.main(argv), 0)[1]), "python -m benchmarks.bench_tokenizer"
    if name == "bench_var":
        from benchmarks import bench_var as m
        return (lambda argv: (m.main(argv), 0)[1]), "python -m benchmarks.bench_var"
    if name == "bench_baselines":
        from benchmarks import bench_baselines as m
        return (lambda argv: (m.main(argv), 0)[1]), "python -m benchmarks.bench_baselines"
    if name == "complete":
        import complete as m
        return m.main, "complete.py"
    if name == "main_report":
        from utils import main_report as m
        return m.main, "python -m utils.main_report"
    if name in ("bench_generation", "bench_speed", "bench_token_nll", "bench_train", "bench_zeroshot", "bench_ingest",
                "bench_intra_steps", "bench_samples"):
        import importlib
        m = importlib.import_module(f"benchmarks.{name}")
        return m._cli, f"python -m benchmarks.{name}"  # what `python -m benchmarks.<name>` runs
    if name == "report":
        from benchmarks import report as m
        return m.main, "python -m benchmarks.report"
    raise KeyError(name)


def _p(**kw):
    return kw


# (entry point, case id, argv template with {name} placeholders filled from F, expected fragment(s) of the
# error line). Fragments in a tuple must all appear.
CASES = [
    # --- prototype pipeline
    ("pipeline", "resume missing", "--data-root {ds} --checkpoint-dir {base}/p1 --resume {missing}", "not found"),
    ("pipeline", "resume empty", "--data-root {ds} --checkpoint-dir {base}/p1 --resume {empty}", "empty.pth"),
    ("pipeline", "resume text", "--data-root {ds} --checkpoint-dir {base}/p1 --resume {text}", "truncated or corrupt"),
    ("pipeline", "resume malicious", "--data-root {ds} --checkpoint-dir {base}/p1 --resume {evil}", "refused to load"),
    ("pipeline", "resume not a dict", "--data-root {ds} --checkpoint-dir {base}/p1 --resume {list_ckpt}",
     "expected a dict"),
    ("pipeline", "resume tokenizer ckpt", "--data-root {ds} --checkpoint-dir {base}/p1 --resume {tok}",
     "not a prototype checkpoint"),
    ("pipeline", "resume folder", "--data-root {ds} --checkpoint-dir {base}/p1 --resume {empty_dir}", "empty_dir"),
    ("pipeline", "resume other sfreq", "--data-root {ds128} --checkpoint-dir {proto} --resume {proto_last}",
     "time_steps"),
    ("pipeline", "resume other channels", "--data-root {ds3ch} --checkpoint-dir {proto} --resume {proto_last}",
     ("channels=2", "channels=3")),
    ("pipeline", "epochs not int", "--data-root {ds} --epochs many", "--epochs"),
    ("pipeline", "max-nonfinite 0", "--data-root {ds} --max-nonfinite 0", "--max-nonfinite"),
    ("pipeline", "lr nan", "--data-root {ds} --lr nan", "--lr"),
    ("pipeline", "data NaN", "--data-root {ds_nan} --checkpoint-dir {base}/p2", ("{nan_train}", "NaN")),
    ("pipeline", "data-root is a file", "--data-root {evil} --checkpoint-dir {base}/p3", "evil.pth"),
    ("pipeline", "run folder taken", "--data-root {ds} --checkpoint-dir {proto}", "--overwrite"),
    # --- plot_rollout
    ("plot_rollout", "prediction missing", "{missing} {base}/o.png", "not found"),
    ("plot_rollout", "prediction empty", "{empty} {base}/o.png", "empty.pth"),
    ("plot_rollout", "prediction malicious", "{evil} {base}/o.png", "refused to load"),
    ("plot_rollout", "prediction is last.pt", "{proto_last} {base}/o.png", "last.pt"),
    ("plot_rollout", "prediction folder", "{empty_dir} {base}/o.png", "empty_dir"),
    ("plot_rollout", "channel out of range", "{demo} {base}/o.png --channel 99", "--channel"),
    ("plot_rollout", "output exists", "{demo} {exists_png}", "--overwrite"),
    ("plot_rollout", "bad split", "{demo} {base}/o.png --split test", "--split"),
    # --- synthetic data generator (create_dummy_dataset.sh)
    ("synthetic_eeg", "zero channels", "{base}/s1 --channels 0", "--channels"),
    ("synthetic_eeg", "sfreq below bands", "{base}/s1 --sfreq 60", "Nyquist"),
    ("synthetic_eeg", "negative windows", "{base}/s1 --n-windows -1", "--n-windows"),
    ("synthetic_eeg", "val fraction 1.5", "{base}/s1 --val-fraction 1.5", "--val-fraction"),
    ("synthetic_eeg", "window not a number", "{base}/s1 --window-sec two", "--window-sec"),
    ("synthetic_eeg", "out not empty", "{ds}", "--overwrite"),
    # --- ingestion
    ("data_eeg", "input missing", "build --inputs {missing} --out {base}/d1 --progress off", "does_not_exist"),
    ("data_eeg", "input empty edf", "build --inputs {edf_empty} --out {base}/d1 --progress off", "empty.edf"),
    ("data_eeg", "input text edf", "build --inputs {edf_text} --out {base}/d1 --progress off", "text.edf"),
    ("data_eeg", "bands reversed", "build --inputs {edf_text} --out {base}/d1 --bands 4-0.5", "--bands"),
    ("data_eeg", "sfreq zero", "build --inputs {edf_text} --out {base}/d1 --sfreq 0", "--sfreq"),
    ("data_eeg", "window negative", "build --inputs {edf_text} --out {base}/d1 --window-sec -1", "--window-sec"),
    ("data_eeg", "no subcommand", "", "required"),
    ("data_eeg", "info missing root", "info {base}/nothing_here", "nothing_here"),
    ("data_eeg", "info corrupt window", "info {ds_corrupt}", "{corrupt_name}"),
    ("data_eeg", "info NaN window", "info {ds_nan}", ("{nan_train}", "NaN")),
    # --- tokenizer training
    ("train_vae", "data missing", "--data_path={base}/nothing --local_out_dir_path={base}/v1", "nothing"),
    ("train_vae", "data empty folder", "--data_path={empty_dir} --local_out_dir_path={base}/v1", "empty_dir"),
    ("train_vae", "data NaN", "--data_path={ds_nan} --local_out_dir_path={base}/v1 --ep=1", ("{nan_train}", "NaN")),
    ("train_vae", "data corrupt", "--data_path={ds_corrupt} --local_out_dir_path={base}/v1", "{corrupt_name}"),
    ("train_vae", "ep not int", "--data_path={ds} --ep=x", "--ep"),
    ("train_vae", "unknown flag", "--data_path={ds} --epochs=3", "--epochs"),
    ("train_vae", "reseed margin above 1", "--data_path={ds} --reseed_margin=1.5", "--reseed_margin"),
    ("train_vae", "negative gain step", "--data_path={ds} --gain_step_db=-2", "--gain_step_db"),
    ("train_vae", "bad patch nums", "--data_path={ds} --local_out_dir_path={base}/v1 --v_patch_nums=9_3",
     "--v_patch_nums"),
    ("train_vae", "resume malicious", "--data_path={ds} --local_out_dir_path={out_evil_vae}", "refused to load"),
    ("train_vae", "resume truncated", "--data_path={ds} --local_out_dir_path={out_trunc_vae}",
     "truncated or corrupt"),
    # --- VAR training
    ("train", "vae_ckpt missing", "--data_path={ds} --vae_ckpt={missing} --local_out_dir_path={base}/t1", "not found"),
    ("train", "vae_ckpt empty", "--data_path={ds} --vae_ckpt={empty} --local_out_dir_path={base}/t1", "empty.pth"),
    ("train", "vae_ckpt malicious", "--data_path={ds} --vae_ckpt={evil} --local_out_dir_path={base}/t1",
     "refused to load"),
    ("train", "vae_ckpt truncated", "--data_path={ds} --vae_ckpt={tok_trunc} --local_out_dir_path={base}/t1",
     "truncated or corrupt"),
    ("train", "vae_ckpt is a prototype", "--data_path={ds} --vae_ckpt={proto_last} --local_out_dir_path={base}/t1",
     "last.pt"),
    ("train", "data other sfreq", "--data_path={ds128} --vae_ckpt={tok} --local_out_dir_path={base}/t1", "ds128"),
    ("train", "data other channels", "--data_path={ds3ch} --vae_ckpt={tok} --local_out_dir_path={base}/t1", "ds3ch"),
    ("train", "data missing", "--data_path={base}/nothing --vae_ckpt={tok} --local_out_dir_path={base}/t1",
     "nothing"),
    ("train", "depth 0", "--data_path={ds} --vae_ckpt={tok} --depth=0", "--depth"),
    ("train", "bs not int", "--data_path={ds} --vae_ckpt={tok} --bs=big", "--bs"),
    ("train", "unknown flag", "--data_path={ds} --vae_ckpt={tok} --epochs=3", "--epochs"),
    ("train", "resume malicious", "--data_path={ds} --vae_ckpt={tok} --local_out_dir_path={out_evil_ar}",
     "refused to load"),
    # --- reconstruction
    ("reconstruct", "vae_ckpt missing", "--vae_ckpt={missing} --data_path={ds} --out={base}/r.npz", "not found"),
    ("reconstruct", "vae_ckpt empty", "--vae_ckpt={empty} --data_path={ds} --out={base}/r.npz", "empty.pth"),
    ("reconstruct", "vae_ckpt malicious", "--vae_ckpt={evil} --data_path={ds} --out={base}/r.npz", "refused to load"),
    ("reconstruct", "vae_ckpt is a prototype", "--vae_ckpt={proto_last} --data_path={ds} --out={base}/r.npz",
     "last.pt"),
    ("reconstruct", "data other sfreq", "--vae_ckpt={tok} --data_path={ds128} --out={base}/r.npz", "ds128"),
    ("reconstruct", "data NaN", "--vae_ckpt={tok} --data_path={ds_nan} --out={base}/r.npz", ("{nan_val}", "NaN")),
    ("reconstruct", "out exists", "--vae_ckpt={tok} --data_path={ds} --out={exists_npz}", "--overwrite"),
    ("reconstruct", "out not npz", "--vae_ckpt={tok} --data_path={ds} --out={base}/r.txt", ".npz"),
    ("reconstruct", "split test", "--vae_ckpt={tok} --data_path={ds} --out={base}/r.npz --split=test", "--split"),
    # --- sampling
    ("sample", "ckpt missing", "--ckpt={missing} --out={base}/g.npz", "not found"),
    ("sample", "ckpt empty", "--ckpt={empty} --out={base}/g.npz", "empty.pth"),
    ("sample", "ckpt malicious", "--ckpt={evil} --out={base}/g.npz", "refused to load"),
    ("sample", "ckpt truncated", "--ckpt={tok_trunc} --out={base}/g.npz", "truncated or corrupt"),
    ("sample", "ckpt is a tokenizer", "--ckpt={tok} --out={base}/g.npz", "vae-ckpt-best.pth"),
    ("sample", "ckpt folder", "--ckpt={empty_dir} --out={base}/g.npz", "empty_dir"),
    ("sample", "n zero", "--ckpt={tok} --out={base}/g.npz --n=0", "--n"),
    ("sample", "top_p 2", "--ckpt={tok} --out={base}/g.npz --top_p=2", "--top_p"),
    ("sample", "out exists", "--ckpt={tok} --out={exists_npz}", "--overwrite"),
    ("sample", "out not npz", "--ckpt={tok} --out={base}/g.txt", ".npz"),
    # --- benchmarks
    ("run_all", "unknown benchmark", "--only nope --no-markdown --results-dir {base}/b1", "nope"),
    ("run_all", "threads not int", "--threads many", "--threads"),
    ("bench_tokenizer", "vae_ckpt malicious", "--quick --vae_ckpt={evil} --data_path={ds} --results-dir={base}/b2",
     "refused to load"),
    ("bench_tokenizer", "vae_ckpt missing", "--quick --vae_ckpt={missing} --data_path={ds} --results-dir={base}/b2",
     "not found"),
    ("bench_var", "vae-ckpt malicious", "--quick --vae-ckpt {evil} --data-root {ds} --results-dir {base}/b3",
     "refused to load"),
    ("bench_baselines", "rates not numbers", "--quick --rates a,b --data-root {ds} --results-dir {base}/b4", "--rates"),
    ("bench_ingest", "inputs missing", "--quick --inputs {missing} --work-dir {base}/b5 --results-dir {base}/b5",
     "does_not_exist"),
    ("bench_generation", "var-ckpt malicious", "--quick --var-ckpt {evil} --data-root {ds} --results-dir {base}/b6",
     "refused to load"),
    ("bench_generation", "var-ckpt is a tokenizer", "--quick --var-ckpt {tok} --data-root {ds} --results-dir {base}/b6",
     "vae-ckpt-best.pth"),
    ("bench_speed", "depths not ints", "--quick --depths four --results-dir {base}/b7", "--depths"),
    ("bench_speed", "vae-ckpt malicious", "--quick --vae-ckpt {evil} --results-dir {base}/b7", "refused to load"),
    ("bench_token_nll", "ckpt malicious", "--ckpt {evil} --data-root {ds} --results-dir {base}/b8", "refused to load"),
    ("bench_token_nll", "ckpt missing", "--ckpt {missing} --data-root {ds} --results-dir {base}/b8", "not found"),
    ("bench_train", "device tpu", "--quick --device tpu --results-dir {base}/b9", "--device"),
    ("bench_train", "depths not ints", "--quick --depths big --results-dir {base}/b9", "--depths"),
    ("bench_zeroshot", "ckpt malicious", "--quick --ckpt {evil} --data-root {ds} --results-dir {base}/b10",
     "refused to load"),
    ("bench_zeroshot", "ckpt missing", "--quick --ckpt {missing} --data-root {ds} --results-dir {base}/b10",
     "not found"),
    ("report", "results-dir missing", "--results-dir {base}/nothing_here --out {base}/R.md", "nothing_here"),
    ("bench_intra_steps", "steps not ints", "--steps one --vae-ckpt {tok} --data-root {ds} --results-dir {base}/b11",
     "--steps"),
    ("bench_intra_steps", "ar-top-k not ints", "--ar-top-k=many --vae-ckpt {tok} --data-root {ds} "
     "--results-dir {base}/b11", "--ar-top-k"),
    ("bench_intra_steps", "vae-ckpt malicious", "--quick --vae-ckpt {evil} --data-root {ds} --runs-dir {base}/b11 "
     "--results-dir {base}/b11", "refused to load"),
    ("bench_samples", "tokenizers not NAME=PATH", "--tokenizers {tok} --data-root {ds} --results-dir {base}/b12",
     "NAME=PATH"),
    ("bench_samples", "tokenizer missing", "--tokenizers new={missing} --data-root {ds} --results-dir {base}/b12",
     "not found"),
    ("bench_samples", "negative seed", "--seed=-1 --tokenizers new={tok} --data-root {ds} --results-dir {base}/b12",
     "--seed"),
    ("bench_samples", "no draws", "--draws=0 --tokenizers new={tok} --data-root {ds} --results-dir {base}/b12",
     "--draws=0"),
    ("main_report", "run dir missing", "{missing}", ("does_not_exist", "--out folder")),
    # --- zero-shot completion
    ("complete", "ckpt missing", "--mode=complete_bands --k=1 --ckpt={missing} --data_path={ds} "
     "--n=2 --out={base}/c.npz", "not found"),
    ("complete", "ckpt malicious", "--mode=complete_bands --k=1 --ckpt={evil} --data_path={ds} "
     "--n=2 --out={base}/c.npz", "refused to load"),
    ("complete", "ckpt is a tokenizer", "--mode=complete_bands --k=1 --ckpt={tok} --data_path={ds} "
     "--n=2 --out={base}/c.npz", "vae-ckpt-best.pth"),
    ("complete", "k above K-1", "--mode=complete_bands --k=9 --ckpt={var} --data_path={ds} --n=2 --out={base}/c.npz",
     "--k=9"),
    ("complete", "n zero", "--mode=complete_bands --k=1 --ckpt={var} --data_path={ds} --n=0 --out={base}/c.npz",
     "--n=0"),
    ("complete", "gap with complete_bands", "--mode=complete_bands --k=1 --gap=0.1:0.2 --ckpt={var} --data_path={ds} "
     "--n=2 --out={base}/c.npz", "--gap"),
    ("complete", "gap outside the window", "--mode=fill_gap --gap=5:6 --ckpt={var} --data_path={ds} --n=2 "
     "--out={base}/c.npz", "--gap"),
    ("complete", "data other channels", "--mode=complete_bands --k=1 --ckpt={var} --data_path={ds3ch} "
     "--n=2 --out={base}/c.npz", "ds3ch"),
    ("complete", "data missing", "--mode=complete_bands --k=1 --ckpt={var} --data_path={base}/nothing "
     "--out={base}/c.npz", "nothing"),
    ("complete", "data NaN", "--mode=complete_bands --k=1 --ckpt={var} --data_path={ds_nan} --n=2 --out={base}/c.npz",
     ("{nan_val}", "NaN")),
    ("complete", "out exists", "--mode=complete_bands --k=1 --ckpt={var} --data_path={ds} --out={exists_npz}",
     "--overwrite"),
    ("complete", "mode missing", "--ckpt={var} --data_path={ds} --n=2 --out={base}/c.npz", "--mode"),
]


# Known gaps (issue 8 report): the case runs and must fail until the named file is fixed.
KNOWN_GAPS: dict[tuple[str, str], str] = {}


def _params():
    for c in CASES:
        reason = KNOWN_GAPS.get((c[0], c[1]))
        marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
        yield pytest.param(*c, id=f"{c[0]}: {c[1]}", marks=marks)


def count_cases() -> dict[str, int]:
    """Bad-input cases per entry point (reported in issue 8's closing note)."""
    return dict(collections.Counter(c[0] for c in CASES))


@pytest.fixture
def cli(capsys):
    """Run ``main`` as ``python -m``/the script would: (exit code, stderr text)."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers.clear()

    def call(name: str, argv: list[str]):
        main, prog = _main(name)
        with pytest.raises(SystemExit) as exc:
            run_cli(main, prog, argv)
        return exc.value.code, capsys.readouterr().err, prog

    yield call
    root.handlers[:] = saved
    root.setLevel(level)


def _fill(template, f: dict):
    if isinstance(template, tuple):
        return tuple(_fill(t, f) for t in template)
    return template.format(**f)


@pytest.mark.parametrize("entry, case, argv, expected", list(_params()))
def test_bad_input_is_one_line_exit_2(entry, case, argv, expected, F, cli, tmp_path):
    argv = _fill(argv, F).split()
    expected = _fill(expected if isinstance(expected, tuple) else (expected,), F)
    code, err, prog = cli(entry, argv)
    assert "Traceback" not in err, err[-3000:]
    errors = [ln for ln in err.splitlines() if ln.startswith(f"{prog}: error:") or ": error: " in ln[:60]]
    assert code == 2, err[-3000:]
    assert len(errors) == 1, err[-3000:]
    for frag in expected:
        assert frag in errors[0], (frag, errors[0])
    assert not os.path.exists(F["marker"]), "a malicious checkpoint ran code"


# ------------------------------------------------------------------------------------------------ subprocesses
def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    env.pop("WORLD_SIZE", None), env.pop("RANK", None)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


SUBPROCESS_CASES = [
    ("torchrun train.py malicious vae_ckpt", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                              "--nproc_per_node=1", "VAR/train.py", "--data_path={ds}",
                                              "--vae_ckpt={evil}", "--local_out_dir_path={base}/sp1"],
     "train.py: error:", "refused to load", 1),
    ("train_vae.py NaN data", [sys.executable, "VAR/train_vae.py", "--data_path={ds_nan}",
                               "--local_out_dir_path={base}/sp2", "--ep=1"], "train_vae.py: error:", "NaN", 2),
    ("train.py NaN window read by a DataLoader worker", [sys.executable, "VAR/train.py", "--data_path={ds_nan}",
                                                         "--vae_ckpt={tok}", "--local_out_dir_path={base}/sp5",
                                                         "--depth=1", "--bs=2", "--ep=1", "--workers=1"],
     "train.py: error:", "contains NaN or Inf", 2),
    ("sample.py malicious ckpt", [sys.executable, "VAR/sample.py", "--ckpt={evil}", "--out={base}/sp3.npz"],
     "sample.py: error:", "refused to load", 2),
    ("create_dummy_dataset.sh bad sfreq", ["bash", "prototypes/scripts/create_dummy_dataset.sh", "{base}/sp4",
                                           "--sfreq", "60"], "error:", "Nyquist", 2),
]


@pytest.mark.slow
@pytest.mark.parametrize("case, cmd, prefix, fragment, rc", SUBPROCESS_CASES, ids=[c[0] for c in SUBPROCESS_CASES])
def test_real_processes_exit_2_with_one_line(case, cmd, prefix, fragment, rc, F):
    """``rc``: 2, except under torchrun, which reports any failed worker (here: exit 2) with its own exit 1."""
    r = _run([_fill(c, F) for c in cmd])
    assert r.returncode == rc, r.stderr[-3000:]
    if rc == 2:
        assert "Traceback" not in r.stderr, r.stderr[-3000:]
    else:  # only torchrun's own ChildFailedError report, no frame from this project's code
        frames = [ln for ln in r.stderr.splitlines() if ln.strip().startswith('File "')]
        assert all("site-packages" in ln or "<frozen" in ln for ln in frames), r.stderr[-3000:]
    errors = [ln for ln in r.stderr.splitlines() if prefix in ln]
    assert len(errors) == 1 and fragment in errors[0], r.stderr[-3000:]
    assert not os.path.exists(F["marker"])


def test_worker_error_is_reported_as_its_own_line():
    from utils.cli import one_line
    wrapped = ("Caught DatasetError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 1, in f\n    raise DatasetError(msg)\n'
               "utils.errors.DatasetError: train/w1.npz: 'signal' contains NaN or Inf values; rebuild the dataset\n")
    assert one_line(wrapped) == "train/w1.npz: 'signal' contains NaN or Inf values; rebuild the dataset"
    assert one_line("--n=0: expected at least 1") == "--n=0: expected at least 1"


# entry-point files whose case-table name is not the file's stem
_ENTRY_ALIASES = {"eeg_scale_ar_pipeline": "pipeline"}


def test_case_count_covers_every_entry_point():
    """Every script with a ``__main__`` block (VAR/, benchmarks/, prototypes/, utils/) uses run_cli (one line,
    exit 2) and has at least one case in the table."""
    import re
    entries = {}
    for folder in ("VAR", "benchmarks", "prototypes", "utils"):
        for dirpath, _, files in os.walk(os.path.join(REPO, folder)):
            for name in files:
                if name.endswith(".py"):
                    with open(os.path.join(dirpath, name), encoding="utf-8") as fh:
                        text = fh.read()
                    main_block = re.search(r"^if __name__ == .__main__.:\n(.*)", text, re.M | re.S)
                    if main_block:
                        entries[_ENTRY_ALIASES.get(name[:-3], name[:-3])] = (os.path.join(dirpath, name), text)
    assert len(entries) >= 19, sorted(entries)
    for name, (path, text) in entries.items():
        assert "run_cli(" in text, f"{path}: its __main__ block does not go through utils.cli.run_cli"
    counts = count_cases()
    assert set(entries) <= set(counts), f"entry points without a bad-input case: {sorted(set(entries) - set(counts))}"
    assert all(n >= 1 for n in counts.values())


def test_every_loader_is_safe():
    """One torch.load in the project (utils/checkpoint.py, weights_only=True); np.load never unpickles."""
    import re
    hits = collections.defaultdict(list)
    for folder in ("utils", "VAR", "prototypes", "benchmarks"):
        for dirpath, _, files in os.walk(os.path.join(REPO, folder)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(dirpath, name)
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
                rel = os.path.relpath(path, REPO)
                for m in re.finditer(r"\b(torch\.load|np\.load|numpy\.load|pickle\.loads?)\((.*)$", text, re.M):
                    hits[m.group(1)].append((rel, m.group(2)))
    assert {rel for rel, _ in hits["torch.load"]} == {os.path.join("utils", "checkpoint.py")}
    assert all("weights_only=True" in call for _, call in hits["torch.load"])
    assert all("allow_pickle=False" in call for _, call in hits["np.load"] + hits["numpy.load"]), hits["np.load"]
    assert not hits["pickle.load"] and not hits["pickle.loads"]

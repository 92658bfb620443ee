"""Every prototype command line: complete --help, and bad input -> one line on stderr, exit 2, nothing written."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from prototypes import eeg_scale_ar_pipeline as pipeline
from prototypes import synthetic_eeg
from prototypes.scripts import plot_rollout
from utils.cli import run_cli
from utils.eeg_bands import DEFAULT_BANDS
from utils.eeg_schema import write_window

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED_FLAGS = ("--data-root --epochs --batch-size --d-model --nhead --num-layers --dropout --lr --weight-decay "
              "--grad-clip --num-workers --log-interval --checkpoint-dir --seed --device --resume "
              "--limit-train-samples --limit-val-samples").split()
C, T = 2, 64


def _run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("cmd, flags", [
    ([sys.executable, "-m", "prototypes.eeg_scale_ar_pipeline", "--help"], SEED_FLAGS + ["--overwrite"]),
    ([sys.executable, "-m", "prototypes.scripts.plot_rollout", "--help"],
     ["--channel", "--data-root", "--split", "--sample-idx", "--json-out"]),
    (["bash", "prototypes/scripts/create_dummy_dataset.sh", "--help"],
     ["--channels", "--sfreq", "--window-sec", "--n-windows", "--seed", "--overwrite"]),
    (["bash", "prototypes/scripts/train_demo.sh", "--help"], ["--overwrite", "--data-root", "--epochs"]),
], ids=["pipeline", "plot_rollout", "create_dummy_dataset", "train_demo"])
def test_help_lists_every_flag(cmd, flags):
    out = _run(cmd)
    assert out.returncode == 0, out.stderr
    for flag in flags:
        assert flag in out.stdout, flag


def test_help_of_the_generator_module(capsys):
    with pytest.raises(SystemExit) as exc:
        synthetic_eeg.main(["--help"])
    assert exc.value.code == 0 and "--windows-per-recording" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------------- bad input
def _window(path, rng, T_=T, bands=DEFAULT_BANDS, sfreq=100.0):
    x_CT = rng.standard_normal((C, T_)).astype(np.float32)
    write_window(str(path), x_CT, np.stack([x_CT] * len(bands)), bands, sfreq)


@pytest.fixture
def dataset(tmp_path, rng):
    root = tmp_path / "data"
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            _window(root / split / f"w{i}.npz", rng)
    return root


def _raw_npz(path, rng, bad):
    x_CT = rng.standard_normal((C, T)).astype(np.float32)
    stages = np.stack([x_CT] * 5)
    if bad == "nan":
        x_CT[0, 3] = np.nan
    else:
        stages[2, 1, 5] = np.inf
    np.savez(str(path), signal=x_CT, cumulative_bands=stages, bands=np.asarray(DEFAULT_BANDS, np.float32),
             sfreq=np.float32(100))


BAD_DATA = {
    "missing train/": (lambda root, rng: shutil.rmtree(root / "train"), "missing 'train/' folder"),
    "missing val/": (lambda root, rng: shutil.rmtree(root / "val"), "missing 'val/' folder"),
    "empty folder": (lambda root, rng: [p.unlink() for p in (root / "train").glob("*.npz")], "no *.npz window files"),
    "corrupt npz": (lambda root, rng: (root / "train" / "w1.npz").write_bytes(b"not a zip file"),
                    "w1.npz: not a readable npz"),
    "other shape": (lambda root, rng: _window(root / "train" / "w2.npz", rng, T_=T + 1), "w2.npz: 'signal' has shape"),
    "other bands": (lambda root, rng: _window(root / "train" / "w2.npz", rng, bands=DEFAULT_BANDS[:4] + ((30, 45),)),
                    "w2.npz: 'bands' is"),
    "val differs": (lambda root, rng: [_window(root / "val" / f"w{i}.npz", rng, T_=T * 2) for i in range(2)],
                    "every window of a dataset needs the same"),
    "NaN": (lambda root, rng: _raw_npz(root / "train" / "w0.npz", rng, "nan"), "w0.npz: 'signal' contains NaN or Inf"),
    "Inf": (lambda root, rng: _raw_npz(root / "val" / "w1.npz", rng, "inf"),
            "w1.npz: 'cumulative_bands' contains NaN or Inf"),
    "above Nyquist": (lambda root, rng: _window(root / "train" / "w0.npz", rng, sfreq=80.0), "above Nyquist"),
    "no root": (lambda root, rng: shutil.rmtree(root), "dataset folder not found"),
}


def _snapshot(folder) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


@pytest.fixture
def cli_stderr(capsys):
    """Run an entry point as its command line would; return (exit code, stderr lines) with logging captured."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()  # setup_logging() then binds a fresh handler to the captured stderr

    def call(main, prog, argv):
        with pytest.raises(SystemExit) as exc:
            run_cli(main, prog, argv)
        err = capsys.readouterr().err
        return exc.value.code, err.strip().splitlines()

    yield call
    root.handlers[:] = saved


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_dataset_is_one_line_exit_2_and_writes_nothing(case, dataset, tmp_path, rng, cli_stderr):
    mutate, expected = BAD_DATA[case]
    mutate(dataset, rng)
    before = _snapshot(tmp_path)
    out = tmp_path / "run"
    code, lines = cli_stderr(pipeline.main, "eeg_scale_ar_pipeline",
                             ["--data-root", str(dataset), "--checkpoint-dir", str(out), "--epochs", "1"])
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("eeg_scale_ar_pipeline: error: "), lines
    assert expected in lines[0] and "Traceback" not in lines[0]
    assert not out.exists() and _snapshot(tmp_path) == before


@pytest.mark.parametrize("argv, expected", [
    (["--epochs", "0"], "--epochs: got 0"), (["--batch-size", "0"], "--batch-size"), (["--lr", "-1"], "--lr"),
    (["--device", "gpu"], "--device: got 'gpu'"), (["--nhead", "3"], "--nhead 3 does not divide --d-model 128"),
    (["--limit-val-samples", "0"], "--limit-val-samples"), (["--demo-index", "7"], "--demo-index: got 7"),
    (["--save-every-steps", "-1"], "--save-every-steps: got -1"),
    (["--resume", "missing.pt"], "missing.pt: checkpoint not found"),
])
def test_bad_flags_are_one_line_exit_2(argv, expected, dataset, tmp_path, cli_stderr):
    out = tmp_path / "run"
    code, lines = cli_stderr(pipeline.main, "eeg_scale_ar_pipeline",
                             ["--data-root", str(dataset), "--checkpoint-dir", str(out), *argv])
    assert code == 2 and len(lines) == 1 and expected in lines[-1], lines
    assert not out.exists()


def test_unknown_flag_is_argparse_error(dataset, cli_stderr):
    code, lines = cli_stderr(pipeline.main, "eeg_scale_ar_pipeline", ["--data-root", str(dataset), "--bogus"])
    # argparse's own convention: a usage line, then `prog: error: ...`
    assert code == 2 and lines[-1].endswith("error: unrecognized arguments: --bogus")


def test_corrupt_checkpoint_is_refused(dataset, tmp_path, cli_stderr):
    import torch
    bad = tmp_path / "best.pt"
    torch.save({"kind": "prototype-scale-ar", "model": {"w": torch.zeros(4096)}}, str(bad))
    bad.write_bytes(bad.read_bytes()[:3000])  # truncated mid-write
    code, lines = cli_stderr(pipeline.main, "eeg_scale_ar_pipeline",
                             ["--data-root", str(dataset), "--checkpoint-dir", str(tmp_path / "run"),
                              "--resume", str(bad)])
    assert code == 2 and len(lines) == 1 and "truncated or corrupt checkpoint" in lines[0]


def test_generator_and_plot_bad_input(tmp_path, cli_stderr):
    code, lines = cli_stderr(synthetic_eeg.main, "synthetic_eeg", [str(tmp_path / "x"), "--sfreq", "80"])
    assert code == 2 and len(lines) == 1 and "above Nyquist" in lines[0] and not (tmp_path / "x").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    code, lines = cli_stderr(synthetic_eeg.main, "synthetic_eeg", [str(tmp_path / "full")])
    assert code == 2 and "--overwrite" in lines[0] and os.listdir(tmp_path / "full") == ["keep.txt"]
    code, lines = cli_stderr(plot_rollout.main, "plot_rollout", [str(tmp_path / "nope.pt"), str(tmp_path / "a.png")])
    assert code == 2 and len(lines) == 1 and "checkpoint not found" in lines[0]
    code, lines = cli_stderr(plot_rollout.main, "plot_rollout", [str(tmp_path / "nope.pt"), str(tmp_path / "a.jpg")])
    assert code == 2 and "expected a .png" in lines[0]


def test_real_processes_exit_2_without_traceback(dataset, tmp_path):
    (dataset / "val" / "w1.npz").write_bytes(b"garbage")
    out = _run([sys.executable, "-m", "prototypes.eeg_scale_ar_pipeline", "--data-root", str(dataset),
                "--checkpoint-dir", str(tmp_path / "run")])
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert "w1.npz: not a readable npz window file" in out.stderr and not (tmp_path / "run").exists()
    demo = _run(["bash", "prototypes/scripts/train_demo.sh", str(dataset)])  # a non-empty folder
    assert demo.returncode == 2 and "--overwrite" in demo.stderr and "Traceback" not in demo.stderr


def test_diverged_training_stops_with_a_user_error(dataset, tmp_path, cli_stderr):
    out = tmp_path / "run"
    code, lines = cli_stderr(pipeline.main, "eeg_scale_ar_pipeline",
                             ["--data-root", str(dataset), "--checkpoint-dir", str(out), "--epochs", "2",
                              "--lr", "1e30", "--grad-clip", "0", "--d-model", "8", "--nhead", "2",
                              "--num-layers", "1", "--device", "cpu"])
    assert code == 2 and lines[-1].startswith("eeg_scale_ar_pipeline: error: training diverged in epoch 1")
    assert not any("Traceback" in line for line in lines)
    assert not (out / "last.pt").exists() and not (out / "best.pt").exists()

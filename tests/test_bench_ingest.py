"""The ingestion benchmark runs end to end in --quick mode on tiny synthetic recordings (numbers not asserted)."""
from __future__ import annotations

import json

import mne
import numpy as np

from benchmarks.bench_ingest import main


def test_bench_ingest_quick(tmp_path):
    rng = np.random.default_rng(0)
    names = ["Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T3", "C3", "Cz", "C4", "T4", "T5", "P3", "Pz", "P4", "T6",
             "O1", "O2"]
    paths = []
    for subject in ("A", "B"):
        for run in (1, 2):
            raw = mne.io.RawArray(rng.standard_normal((19, 2000)) * 1e-5, mne.create_info(names, 200.0, "eeg"),
                                  verbose=False)
            paths.append(str(tmp_path / f"Subj{subject}_{run}_raw.fif"))
            raw.save(paths[-1], verbose=False)
    result = main(["--quick", "--inputs", *paths, "--results-dir", str(tmp_path / "results"),
                   "--label-from", r"regex:_1_raw=rest,_2_raw=task", "--work-dir", str(tmp_path)])
    saved = json.load(open(tmp_path / "results" / "ingest.json"))
    assert saved["recordings"] == 4 and saved["recording_sec"] == 40.0
    assert [b["jobs"] for b in result["builds"]] == [1, 2] and all(b["windows"] == 8 for b in result["builds"])
    assert result["steps_cpu_s"]["windows"] == 8 and result["report"]["tables"][0]["rows"]

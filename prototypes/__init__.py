"""The lightweight prototype: one small Transformer that adds one frequency band per step.

Modules
-------
- :mod:`prototypes.eeg_band_decomposer` — cumulative band stages (re-exported from :mod:`utils`).
- :mod:`prototypes.synthetic_eeg` — deterministic synthetic EEG datasets in the real npz schema.
- :mod:`prototypes.eeg_frequency_dataset` — (stage k, stage k+1, k) training pairs from a dataset root.
- :mod:`prototypes.eeg_scale_ar_model` — the model and the stage-by-stage rollout.
- :mod:`prototypes.eeg_scale_ar_train` — the training/evaluation loop and its checkpoint state.
- :mod:`prototypes.rollout_metrics` — per-stage MSE and SNR of a rollout against ground truth.
- :mod:`prototypes.eeg_scale_ar_pipeline` — the command line (train, resume, infer).
- :mod:`prototypes.scripts.plot_rollout` — figure and metrics of ``demo_prediction.pt``.
"""

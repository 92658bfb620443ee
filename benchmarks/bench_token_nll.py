"""What the transformer learned beyond token frequencies: VAR's validation NLL per scale beside count models.

Usage::

    python -m benchmarks.bench_token_nll [--quick] [--ckpt AR_CKPT] [--data-root DIR] [--results-dir DIR]

A VAR checkpoint is only useful for generation and zero-shot completion when its
per-token distributions know more than how often each token occurs. This benchmark tokenizes the training
and validation windows with the checkpoint's own tokenizer and reports, per scale, the validation
cross-entropy (nats per token) of:

- **VAR**: teacher-forced, with the windows' class labels (as ``VAR/train.py`` validates);
- **unigram**: each scale's token frequencies in the training windows (add-1/2 smoothing);
- **parent bigram**: the token given the co-located token of the previous scale, counted on the training
  windows and shrunk towards the unigram (a Dirichlet prior whose weight is chosen by cross-validation on
  the training windows), the simplest model that uses the coarse-to-fine context VAR conditions on;
- **left-neighbour bigram**: the token given the previous position's token of the same scale, counted the
  same way: context that plain VAR, which predicts a scale's tokens in parallel, cannot use (``--intra_ar``
  and ``--intra_steps`` models can);
- **uniform**: ln V.

It also reports VAR's NLL on the training windows (fit against generalisation) and the information VAR
adds over the unigram in bits per window. ``VAR`` close to ``unigram`` means its samples are draws from the
token frequencies: completions then cannot follow the observed context, whatever the sampler.

Default checkpoint: ``<results-dir>/raw/var_run[_quick]/ar-ckpt-best.pth`` (from ``bench_var``) on the
dataset it was trained on (``bench_var``'s eegmat build). Writes ``<results-dir>/token_nll.json`` and
``token_nll.png``. ``--split-by time`` (issue 13's second protocol) defaults to ``bench_samples --split-by time``'s
run, ``raw/samples_var_new_time``, on its dataset (the last 30 % of every recording held out) and writes
``token_nll_time.json`` and ``token_nll_time.png``.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks import bench_parser, figure_path, machine_info, save_result
from benchmarks.bench_baselines import (add_split_flag, default_var_run, ensure_bench_dataset, split_suffix,
                                        split_title)
from utils.cli import run_cli, setup_logging
from utils.eeg_dataset import EEGWindowDataset
from utils.errors import CheckpointError
from utils.var_path import ensure_var_importable

logger = logging.getLogger("benchmarks.bench_token_nll")

NAME = "token_nll"
TAKES_SPLIT_BY = True  # run_all --split-by passes its protocol on
#: Candidate weights of the unigram prior in the parent-bigram model (pseudo-counts per parent token); the
#: one used is chosen by two-fold cross-validation on the training windows (validation is never looked at).
PARENT_PRIORS = (1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0)

__all__ = ["unigram_nll", "parent_of", "parent_bigram_nll", "choose_parent_prior", "var_nll", "main"]


# ------------------------------------------------------------------------------------------ count models
def _unigram_probs(train_N: np.ndarray, V: int, alpha: float = 0.5) -> np.ndarray:
    cnt = np.bincount(train_N.reshape(-1), minlength=V).astype(np.float64)
    return (cnt + alpha) / (cnt.sum() + alpha * V)


def unigram_nll(train_NL: np.ndarray, val_NL: np.ndarray, V: int, alpha: float = 0.5) -> float:
    """Mean NLL (nats) of ``val_NL`` tokens under the add-``alpha`` token frequencies of ``train_NL``."""
    p = _unigram_probs(train_NL, V, alpha)
    return float(-np.log(p[val_NL.reshape(-1)]).mean())


def parent_of(pn_child: int, pn_parent: int) -> np.ndarray:
    """(pn_child,) index of the parent-scale position whose support holds each child position's centre."""
    centre = (np.arange(pn_child) + 0.5) / pn_child
    return np.minimum((centre * pn_parent).astype(int), pn_parent - 1)


def parent_bigram_nll(train_child: np.ndarray, train_parent: np.ndarray, val_child: np.ndarray,
                      val_parent: np.ndarray, V: int, prior: float) -> float:
    """Mean NLL (nats) of child tokens given their parent token, counts shrunk towards the unigram.

    ``p(t | c) = (n(c, t) + prior * p_uni(t)) / (n(c) + prior)``; every array is (N, l) with the child and
    its parent aligned position by position.
    """
    p_uni = _unigram_probs(train_child, V)
    joint = np.zeros((V, V))
    np.add.at(joint, (train_parent.reshape(-1), train_child.reshape(-1)), 1.0)
    p = (joint + prior * p_uni[None]) / (joint.sum(1, keepdims=True) + prior)
    return float(-np.log(p[val_parent.reshape(-1), val_child.reshape(-1)]).mean())


def choose_parent_prior(child_NL: np.ndarray, parent_NL: np.ndarray, V: int,
                        priors: Sequence[float] = PARENT_PRIORS) -> float:
    """The prior with the lowest two-fold cross-validated NLL on these (training) windows."""
    half = len(child_NL) // 2
    if half == 0:
        return float(priors[-1])
    folds = [(slice(0, half), slice(half, None)), (slice(half, None), slice(0, half))]
    cv = [np.mean([parent_bigram_nll(child_NL[a], parent_NL[a], child_NL[b], parent_NL[b], V, pr) for a, b in folds])
          for pr in priors]
    return float(priors[int(np.argmin(cv))])


# ------------------------------------------------------------------------------------------ VAR
@torch.no_grad()
def var_nll(var, vae, x_NCT: torch.Tensor, label_N: torch.Tensor, bs: int = 32) -> tuple[list[float], list[np.ndarray]]:
    """Teacher-forced cross-entropy per scale (nats/token) and the tokens per scale (each (N, pn * G)).

    ``label_N`` (N,) classes, or (N, 2) class and level for a VAR with levels (the NLL given the level)."""
    sums = torch.zeros(len(var.patch_nums), dtype=torch.float64)
    toks: list[list[np.ndarray]] = [[] for _ in var.patch_nums]
    for i in range(0, len(x_NCT), bs):
        idx_S = vae.eeg_to_idxBl(x_NCT[i:i + bs])
        x_in = vae.quantize.idxBl_to_var_input(idx_S)
        lab = label_N[i:i + bs]
        kw = {"level_B": lab[:, 1]} if lab.ndim == 2 else {}
        lab = lab[:, 0] if lab.ndim == 2 else lab
        logits_BLV = var(lab, x_in, torch.cat(idx_S, dim=1), **kw).float()  # exact under the group order
        ce_BL = F.cross_entropy(logits_BLV.transpose(1, 2), torch.cat(idx_S, dim=1), reduction="none")
        cur = 0
        for si, t in enumerate(idx_S):
            sums[si] += ce_BL[:, cur:cur + t.shape[1]].mean(dim=1).sum().item()
            cur += t.shape[1]
            toks[si].append(t.cpu().numpy())
    return (sums / len(x_NCT)).tolist(), [np.concatenate(t) for t in toks]


def _load_split(root: str, split: str, uv: float, limit: int | None) -> tuple[torch.Tensor, torch.Tensor, EEGWindowDataset]:
    """One split in model units (float32) with long labels, read by :func:`benchmarks.bench_var.load_val`."""
    from benchmarks.bench_var import load_val
    x, lab, ds = load_val(root, split, limit)
    return torch.from_numpy(x / uv).float(), torch.as_tensor(lab, dtype=torch.long), ds


def _plot(path: str, names: Sequence[str], rows: dict, V: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(10, 4))
    x = np.arange(len(names))
    w = 0.8 / len(rows)
    for i, (lab, vals) in enumerate(rows.items()):
        ax.bar(x + (i - (len(rows) - 1) / 2) * w, vals, w, label=lab)
    ax.axhline(math.log(V), color="k", ls="--", lw=1, label=f"uniform (ln {V})")
    lo = min(min(v) for v in rows.values())
    ax.set_ylim(max(0.0, lo - 0.5), math.log(V) + 0.2)
    ax.set_xticks(x)
    ax.set_xticklabels(names)
    ax.set_ylabel("validation NLL (nats / token)")
    ax.set_title("VAR vs token-count models per scale (lower is better)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict:
    p = bench_parser("python -m benchmarks.bench_token_nll", __doc__.split("\n\n")[0])
    p.add_argument("--ckpt", default=None, help="VAR checkpoint ar-ckpt-*.pth (default: the one bench_var trained, "
                   "<results-dir>/raw/var_run[_quick]/ar-ckpt-best.pth)")
    p.add_argument("--limit", type=int, default=None, help="use at most N windows per split (default: all)")
    add_split_flag(p)
    args = p.parse_args(argv)
    sfx = split_suffix(args.split_by)
    ensure_var_importable()
    import sample
    from benchmarks.bench_var import ensure_dataset
    from utils.eeg_bands import band_names
    from vae_checkpoint import check_dataset_matches

    raw = os.path.join(args.results_dir, "raw")
    run, trainer = default_var_run(args.split_by, args.quick)
    ckpt = args.ckpt or os.path.join(raw, run, "ar-ckpt-best.pth")
    if not os.path.exists(ckpt):
        raise CheckpointError(f"--ckpt={ckpt}: not found; run `python -m benchmarks.{trainer}` first or pass "
                              "--ckpt=ar-ckpt-best.pth")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    var, vae, meta = sample.load_var_checkpoint(ckpt, device="cpu")
    tok = meta["tokenizer"]
    root = args.data_root or (ensure_dataset(os.path.join(raw, "eegmat100_s25"), 2.5) if not sfx
                              else ensure_bench_dataset(raw, args.split_by))
    limit = args.limit or (64 if args.quick else None)
    uv = float(tok["uv_scale"])
    x_tr, lab_tr, ds_tr = _load_split(root, "train", uv, limit)
    x_va, lab_va, ds_va = _load_split(root, "val", uv, limit)
    check_dataset_matches(tok, ds_va, ckpt)
    V, G = var.V, var.G
    val_var, toks_va = var_nll(var, vae, x_va, lab_va)
    train_var, toks_tr = var_nll(var, vae, x_tr, lab_tr)
    n_extra = int(tok.get("n_extra_coarse", 0))
    names = [f"c{i}" for i in range(n_extra)] + band_names(tok["bands"])
    pns = list(var.patch_nums)
    uni, big, priors, left = [], [], [], []
    for si, pn in enumerate(pns):
        uni.append(unigram_nll(toks_tr[si], toks_va[si], V))
        # left neighbour: token j of position i given token j of position i - 1; position 0 costs the unigram
        tr_c, tr_p, va_c, va_p = toks_tr[si][:, G:], toks_tr[si][:, :-G], toks_va[si][:, G:], toks_va[si][:, :-G]
        nll_left = parent_bigram_nll(tr_c, tr_p, va_c, va_p, V, choose_parent_prior(tr_c, tr_p, V)) if pn > 1 else uni[-1]
        left.append(((pn - 1) * nll_left + uni[-1]) / pn)
        if si == 0:
            big.append(uni[-1])  # the first scale has no parent: the bigram falls back to the unigram
            priors.append(None)
            continue
        par = parent_of(pn, pns[si - 1])
        # token k of a position with G tokens per position: the same group's token of the parent position
        cols = (par[:, None] * G + np.arange(G)[None]).reshape(-1)
        prior = choose_parent_prior(toks_tr[si], toks_tr[si - 1][:, cols], V)
        priors.append(prior)
        big.append(parent_bigram_nll(toks_tr[si], toks_tr[si - 1][:, cols], toks_va[si], toks_va[si - 1][:, cols], V,
                                     prior))
    n_tok = [pn * G for pn in pns]
    per_window = lambda nll: float(sum(n * v for n, v in zip(n_tok, nll)) / math.log(2))  # noqa: E731 (bits/window)
    bits = {"uniform": per_window([math.log(V)] * len(pns)), "unigram": per_window(uni),
            "parent bigram": per_window(big),
            "left-neighbour bigram": per_window(left), "VAR (val)": per_window(val_var),
            "VAR (train)": per_window(train_var)}
    gain_bits = bits["unigram"] - bits["VAR (val)"]
    rows = [[n, round(math.log(V), 3), round(u, 3), round(b, 3), round(lf, 3), round(v, 3), round(t, 3)]
            for n, u, b, lf, v, t in zip(names, uni, big, left, val_var, train_var)]
    res = {
        "name": NAME + sfx, "split_by": args.split_by, "quick": bool(args.quick), "machine": machine_info(),
        "ckpt": os.path.abspath(meta["path"]),
        "data_root": os.path.abspath(root), "n_train": len(ds_tr), "n_val": len(ds_va), "vocab_size": V,
        "tokens_per_pos": G, "patch_nums": pns, "epoch": meta["epoch"], "scales": names,
        "nll_nats": {"uniform": [math.log(V)] * len(pns), "unigram": uni, "parent_bigram": big, "left_bigram": left,
                     "var_val": val_var, "var_train": train_var},
        "parent_bigram_prior": priors,
        "bits_per_window": bits, "var_gain_over_unigram_bits_per_window": gain_bits,
        "var_gain_over_unigram_pct": 100 * gain_bits / bits["unigram"],
        "parent_bigram_beats_var": bool(bits["parent bigram"] < bits["VAR (val)"]),
        "intra_ar": int(getattr(var, "intra_ar", 0)), "intra_steps": int(getattr(var, "intra_steps", 1)),
        "sees_same_scale": bool(getattr(var, "needs_gt_tokens", False)),
    }
    png = figure_path(args.results_dir, f"{NAME}{sfx}.png")
    _plot(png, names, {"unigram": uni, "parent bigram": big, "left-neighbour bigram": left, "VAR (val)": val_var,
                       "VAR (train)": train_var}, V)
    res["report"] = {
        "title": ("What the VAR transformer learned beyond token frequencies"
                  + split_title(args.split_by)),
        "text": [f"Checkpoint {os.path.basename(os.path.dirname(res['ckpt']))}/{os.path.basename(res['ckpt'])} "
                 f"(epoch {meta['epoch']}), tokenized with its own tokenizer (scales {pns}, G={G}, V={V}); "
                 f"{len(ds_tr)} training / {len(ds_va)} validation windows of {os.path.basename(root.rstrip('/'))}.",
                 f"Per window, VAR's validation NLL is {bits['VAR (val)']:.0f} bits against {bits['unigram']:.0f} "
                 f"for the token frequencies alone and {bits['uniform']:.0f} for uniform tokens: VAR adds "
                 f"{gain_bits:.0f} bits ({res['var_gain_over_unigram_pct']:.1f} %) of context over the frequencies; "
                 f"the parent-bigram count model {'beats' if res['parent_bigram_beats_var'] else 'does not beat'} it "
                 f"({bits['parent bigram']:.0f} bits). Knowing the previous token of the same scale gives "
                 f"{bits['left-neighbour bigram']:.0f} bits" + (
                     ": context VAR's parallel prediction within a scale cannot use." if not res["sees_same_scale"]
                     else f"; this model sees its own scale (--intra_ar={res['intra_ar']}, --intra_steps="
                          f"{res['intra_steps']}) and {'beats' if bits['VAR (val)'] < bits['left-neighbour bigram'] else 'does not beat'} "
                          "that count model.")],
        "tables": [{"title": "Validation NLL per scale (nats/token); last column: VAR on its training windows",
                    "columns": ["scale", "uniform", "unigram", "parent bigram", "left-neighbour bigram", "VAR (val)",
                                "VAR (train)"],
                    "rows": rows}],
        "figures": [{"title": "NLL per scale", "path": os.path.basename(png)}],
    }
    save_result(NAME + sfx, res, args.results_dir)
    return res


def _cli(argv: Sequence[str] | None = None) -> int:
    res = main(argv)
    print("\n".join(res["report"]["text"]))
    return 0


if __name__ == "__main__":
    setup_logging()
    run_cli(_cli, prog="python -m benchmarks.bench_token_nll")

"""Command-line configuration of the training entries: ``BaseArgs`` (shared with the tokenizer's
``train_vae.py``), VAR's ``Args``, and ``init_dist_and_get_args`` (upstream ``utils/arg_util.py``).

Flags keep upstream's names, defaults and ``--name=value`` syntax (``--name value`` and the dashed
twin ``--name-with-dashes`` work too); booleans take an explicit value (``--saln=1``, ``--anorm=false``).

fix(upstream):
- built on stdlib argparse (Tap is not a dependency); every field's help text comes from its metadata;
- unknown flags are errors (upstream printed a warning and trained on with the default);
- derived fields (``batch_size``, ``glb_batch_size``, ``tlr`` when not given, paths, ...) are computed
  in :meth:`BaseArgs.derive` and cannot be set on the command line;
- run-time metrics (losses, accuracies, lr) are not fields: :meth:`BaseArgs.dump_log` takes them
  as a dict; log.txt gets its header once, when it is created (§18.4: upstream truncated it at
  every epoch whose string contained "1/");
- no git subprocess at import (§18.11); the code version comes from ``utils.project_info``;
- no ``KEVIN_LOCAL`` environment switch: tests use tiny configs instead.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import random
import re
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

import dist
from utils import misc
from utils.cli import ArgumentParser
from utils.errors import UserError
from utils.project_info import REPO_ROOT, code_version

logger = logging.getLogger(__name__)

DEFAULT_OUT_DIR = os.path.join(REPO_ROOT, "local_output")


def arg(default: Any, help: str) -> Any:  # noqa: A002 - mirrors argparse
    """A command-line field with its help text."""
    return field(default=default, metadata={"help": help})


def derived(default: Any, help: str) -> Any:
    """A field computed by :meth:`BaseArgs.derive`; not settable from the command line."""
    return field(default=default, metadata={"help": help, "derived": True})


def str2bool(text: str) -> bool:
    """'1', 'true', 'yes', 'on' -> True; '0', 'false', 'no', 'off' -> False (case-insensitive)."""
    t = str(text).strip().lower()
    if t in ("1", "true", "yes", "on", "y", "t"):
        return True
    if t in ("0", "false", "no", "off", "n", "f"):
        return False
    raise ValueError(text)


str2bool.__name__ = "bool"


def _converter(tp: Any):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        conv = _converter(inner[0])

        def optional(text: str, conv=conv):
            return None if str(text).strip().lower() in ("none", "null", "") else conv(text)
        optional.__name__ = getattr(conv, "__name__", "value")
        return optional
    return {bool: str2bool, int: int, float: float, str: str}[tp]


class _OneLineErrorParser(ArgumentParser):
    """Reports bad flags as one line (``prog: error: ...``, exit 2), with a "did you mean" for typos."""

    def error(self, message: str) -> typing.NoReturn:  # type: ignore[override]
        m = re.match(r"unrecognized arguments: (.*)", message)
        if m:
            known = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
            hints = []
            for bad in m.group(1).split():
                flag = bad.split("=", 1)[0]
                close = difflib.get_close_matches(flag, known, n=1)
                if close:
                    hints.append(f"{flag} -> {close[0]}")
            message += "; " + (f"did you mean: {', '.join(hints)}" if hints else "see --help for the flags")
        self.exit(2, f"{self.prog}: error: {message}\n")


@dataclass
class BaseArgs:
    """Fields shared by every training entry (data, optimisation, schedule, output, seeding)."""

    # ---- data / experiment
    data_path: str = arg("", "dataset root with train/ and val/ window files (python -m utils.data_eeg build ...)")
    exp_name: str = arg("", "experiment name written into log.txt's header; default: the output folder's name "
                        "(upstream's placeholder was 'text')")
    # ---- optimisation
    fp16: int = arg(0, "mixed precision: 0 fp32, 1 fp16 autocast + GradScaler, 2 bf16 autocast (also on CPU)")
    tblr: float = arg(1e-4, "base learning rate per 256 samples; the peak lr is tlr = ac * tblr * glb_batch_size / 256")
    tlr: float | None = arg(None, "peak learning rate; None derives it from tblr")
    twd: float = arg(0.05, "initial weight decay")
    twde: float = arg(0.0, "final weight decay (cosine from twd); 0 means the same as twd")
    tclip: float = arg(2.0, "clip the global grad norm to this value; <= 0 disables clipping")
    bs: int = arg(768, "global batch size over all processes and accumulation steps (rewritten to the realised value)")
    ac: int = arg(1, "gradient accumulation steps")
    ep: int = arg(250, "epochs")
    wp: float = arg(0.0, "warm-up epochs; 0 means ep / 50")
    wp0: float = arg(0.005, "lr ratio at the start of warm-up")
    wpe: float = arg(0.01, "lr ratio at the last iteration")
    sche: str = arg("lin0", "lr schedule after warm-up: lin0, lin, lin00, lin<T>, cos, exp")
    opt: str = arg("adamw", "optimizer: adamw or adam (both AdamW with betas (0.9, 0.95), as upstream)")
    afuse: bool = arg(True, "use the fused AdamW kernel (CUDA only; ignored with a log line on CPU)")
    workers: int = arg(0, "DataLoader worker processes (0 = load in the main process); clamped to the batch size")
    # ---- checkpoints / robustness (port: new)
    save_ep: int = arg(1, "validate and write the last checkpoint every N epochs (and at the end); upstream used 10")
    save_it: int = arg(500, "also write a mid-epoch checkpoint (with the sampler position) every N iterations; 0 = off")
    max_nonfinite: int = arg(10, "stop with an error after this many optimizer steps in a row with a non-finite loss or grad")
    # ---- environment
    local_out_dir_path: str = arg(DEFAULT_OUT_DIR, "output folder (checkpoints, log.txt, stdout/stderr copies, TensorBoard); "
                                  "default <repo>/local_output, independent of the working directory")
    tf32: bool = arg(True, "allow TF32 matmuls on Ampere+ GPUs")
    seed: int | None = arg(None, "random seed (per-rank seed = seed * world_size + rank); None = nondeterministic")
    same_seed_for_all_ranks: int = arg(0, "offset added to the epoch seed of the training sampler's permutation")
    # ---- derived (not settable)
    batch_size: int = derived(0, "per-process batch size = round(bs / ac / world_size)")
    glb_batch_size: int = derived(0, "global batch per micro-step = batch_size * world_size")
    world_size: int = derived(1, "number of processes")
    device: str = derived("cpu", "device of this process")
    tb_log_dir_path: str = derived("", "TensorBoard folder inside local_out_dir_path")
    log_txt_path: str = derived("", "local_out_dir_path/log.txt")
    last_ckpt_path: str = derived("", "the last-checkpoint path")
    cmd: str = derived("", "the command line")
    code_version: str = derived("", "code version (git commit) of this run")

    # names of the checkpoint files; subclasses override
    CKPT_PREFIX: typing.ClassVar[str] = "ar"
    PROG: typing.ClassVar[str] = "train.py"
    DESCRIPTION: typing.ClassVar[str] = ""

    # ------------------------------------------------------------------ parsing
    @classmethod
    def build_parser(cls) -> ArgumentParser:
        parser = _OneLineErrorParser(prog=cls.PROG, description=cls.DESCRIPTION)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("derived") or not f.init:
                continue
            conv = _converter(hints[f.name])
            parser.add_argument(f"--{f.name}", type=conv, default=f.default,
                                metavar=getattr(conv, "__name__", "value").upper(), help=f.metadata.get("help", ""))
        return parser

    @classmethod
    def parse(cls, argv: Sequence[str] | None = None) -> "BaseArgs":
        """Parse ``argv`` (default ``sys.argv[1:]``); bad or unknown flags exit with code 2 and one line."""
        argv = list(sys.argv[1:] if argv is None else argv)
        # the legacy launcher's --local-rank is not ours: torchrun passes LOCAL_RANK in the environment
        argv = [a for a in argv if not re.match(r"^--local[-_]rank(=|$)", a)]
        ns = cls.build_parser().parse_args(argv)
        args = cls(**vars(ns))
        args.cmd = " ".join(argv)
        args.validate()
        return args

    def validate(self) -> None:
        """Range checks of command-line values; raise :class:`UserError` naming the flag."""
        def need(cond: bool, flag: str, expected: str) -> None:
            if not cond:
                raise UserError(f"--{flag}={getattr(self, flag)!r}: expected {expected}")
        need(self.fp16 in (0, 1, 2), "fp16", "0 (fp32), 1 (fp16) or 2 (bf16)")
        need(self.bs >= 1, "bs", "a positive global batch size")
        need(self.ac >= 1, "ac", "an integer >= 1")
        need(self.ep >= 1, "ep", "an integer >= 1")
        need(self.tblr > 0, "tblr", "a positive learning rate")
        need(self.tlr is None or self.tlr > 0, "tlr", "a positive learning rate or None")
        need(self.opt in ("adamw", "adam"), "opt", "'adamw' or 'adam'")
        need(self.sche in ("cos", "lin", "lin0", "lin00", "exp") or bool(re.fullmatch(r"lin[0-9.]+", self.sche)),
             "sche", "one of lin0, lin, lin00, lin<T>, cos, exp")
        need(0 < self.wp0 <= 1 and 0 <= self.wpe <= 1, "wp0" if not 0 < self.wp0 <= 1 else "wpe", "a ratio in (0, 1]")
        need(self.save_ep >= 1, "save_ep", "an integer >= 1")
        need(self.save_it >= 0, "save_it", "an integer >= 0")
        need(self.max_nonfinite >= 1, "max_nonfinite", "an integer >= 1")
        need(self.twd >= 0 and self.twde >= 0, "twd", "non-negative weight decays")

    # ------------------------------------------------------------------ derivation
    def derive(self, world_size: int, device: str = "cpu") -> None:
        """Compute every derived field (the only place they are set)."""
        self.world_size, self.device = int(world_size), str(device)
        self.batch_size = max(1, round(self.bs / self.ac / self.world_size))
        self.glb_batch_size = self.batch_size * self.world_size
        # fix(upstream): bs becomes the realised batch over processes AND accumulation steps (upstream wrote
        # glb_batch_size, i.e. dropped the ac factor, while tlr below still counts it)
        self.bs = self.glb_batch_size * self.ac
        self.workers = min(max(0, self.workers), self.batch_size)
        if self.tlr is None:
            self.tlr = self.ac * self.tblr * self.glb_batch_size / 256
        self.twde = self.twde or self.twd
        if self.wp == 0:
            self.wp = self.ep / 50
        self.local_out_dir_path = os.path.abspath(self.local_out_dir_path)
        self.exp_name = self.exp_name or os.path.basename(self.local_out_dir_path)
        self.log_txt_path = os.path.join(self.local_out_dir_path, "log.txt")
        self.last_ckpt_path = os.path.join(self.local_out_dir_path, f"{self.CKPT_PREFIX}-ckpt-last.pth")
        self.tb_log_dir_path = os.path.join(self.local_out_dir_path, re.sub(r"[^\w\-+,.]", "_", self.tb_name()))
        self.code_version = code_version()

    def tb_name(self) -> str:
        return f"tb-{self.CKPT_PREFIX}__b{self.bs}ep{self.ep}{self.opt[:4]}lr{self.tblr:g}wd{self.twd:g}"

    # ------------------------------------------------------------------ seeding / precision
    def seed_everything(self, benchmark: bool) -> None:
        """Seed python, numpy and torch with ``seed * world_size + rank`` (no-op without a seed)."""
        torch.backends.cudnn.enabled = True
        torch.backends.cudnn.benchmark = benchmark
        if self.seed is None:
            return
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        seed = self.seed * dist.get_world_size() + dist.get_rank()
        os.environ["PYTHONHASHSEED"] = str(seed)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed(seed)
            torch.cuda.manual_seed_all(seed)

    def get_different_generator_for_each_rank(self) -> torch.Generator | None:
        if self.seed is None:
            return None
        g = torch.Generator()
        g.manual_seed(self.seed * dist.get_world_size() + dist.get_rank())
        return g

    @staticmethod
    def set_tf32(tf32: bool) -> None:
        if torch.cuda.is_available():
            torch.backends.cudnn.allow_tf32 = bool(tf32)
            torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
        torch.set_float32_matmul_precision("high" if tf32 else "highest")

    @staticmethod
    def compile_model(m: torch.nn.Module, fast: int) -> torch.nn.Module:
        """torch.compile ``m`` with mode 1 'reduce-overhead', 2 'max-autotune', 3 'default'; 0 = as is."""
        if fast == 0 or not hasattr(torch, "compile"):
            return m
        mode = {1: "reduce-overhead", 2: "max-autotune", 3: "default"}[fast]
        logger.info("torch.compile(mode=%s) on %s", mode, type(m).__name__)
        return torch.compile(m, mode=mode)

    # ------------------------------------------------------------------ persistence / logging
    def state_dict(self) -> dict:
        """Every field as plain types (stored in checkpoints)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "device"}

    def load_state_dict(self, d: dict) -> None:
        names = {f.name for f in dataclasses.fields(self)}
        for k, v in d.items():
            if k in names and k != "device":
                setattr(self, k, v)

    def dump_log(self, metrics: dict | None = None) -> None:
        """Append one JSON line (``metrics``) to log.txt; the header is written when the file is created."""
        if not dist.is_local_master():
            return
        os.makedirs(os.path.dirname(self.log_txt_path), exist_ok=True)
        new = not os.path.exists(self.log_txt_path)
        with open(self.log_txt_path, "a", encoding="utf-8") as fp:
            if new:
                fp.write(json.dumps({"is_master": dist.is_master(), "name": self.exp_name, "cmd": self.cmd,
                                     "code_version": self.code_version, "tb_log_dir_path": self.tb_log_dir_path})
                         + "\n\n")
            if metrics:
                fp.write(json.dumps(metrics, default=str) + "\n")

    def __str__(self) -> str:
        return "{\n" + "\n".join(f"  {k:<24s}: {v}" for k, v in self.state_dict().items()) + "\n}"


@dataclass
class Args(BaseArgs):
    """VAR transformer training (``VAR/train.py``): upstream's fields plus the EEG tokenizer path."""

    PROG: typing.ClassVar[str] = "train.py"
    DESCRIPTION: typing.ClassVar[str] = ("Train the VAR transformer on band tokens of a frozen EEG tokenizer. "
                                         "Re-running the same command resumes from local_out_dir_path.")
    vae_ckpt: str = arg("", "tokenizer checkpoint (vae-ckpt-best.pth or vae-ckpt-last.pth from VAR/train_vae.py)")
    # Departs from upstream (1e-4, tuned for batch 768 on ImageNet): at batch 16-32 on a few thousand EEG windows
    # 1e-4 gives a peak lr near 1e-5 and the loss stays at uniform for epochs; 8e-3 is what the benchmarks and
    # the main job train with (docs/design.md §9).
    tblr: float = arg(8e-3, "base learning rate per 256 samples; the peak lr is tlr = ac * tblr * glb_batch_size / 256. "
                      "Default 8e-3, not upstream's 1e-4 (batch 768, ImageNet): with small batches on EEG, 1e-4 "
                      "leaves the loss at uniform; 8e-3 learns on eegmat (docs/design.md §9)")
    skip_bad: bool = arg(False, "skip window files that fail validation or reading (each reported with its path and "
                         "counted in the log) instead of stopping")
    # ---- compile
    vfast: int = arg(0, "torch.compile the tokenizer: 0 off, 1 reduce-overhead, 2 max-autotune, 3 default")
    tfast: int = arg(0, "torch.compile VAR: 0 off, 1 reduce-overhead, 2 max-autotune, 3 default")
    # ---- model
    depth: int = arg(16, "VAR depth: width = 64 * depth, heads = depth, drop_path = 0.1 * depth / 24")
    ini: float = arg(-1.0, "init std of Linear/Embedding weights; -1 = sqrt(1 / (3 * width))")
    hd: float = arg(0.02, "head weight multiplier at init")
    aln: float = arg(0.5, "multiplier of the AdaLN scale/shift weights at init")
    alng: float = arg(1e-5, "multiplier of the AdaLN gate (gamma) weights at init")
    saln: bool = arg(False, "shared AdaLN (one condition projection for all blocks)")
    anorm: bool = arg(True, "cosine attention (L2-normalised q, k with a learned temperature)")
    ar_baseline: bool = arg(False, "train the raster-order next-token baseline (models/ar_baseline.py: same blocks, "
                            "depth rule and tokens, one token per step) instead of VAR")
    fuse: bool = arg(True, "use fused kernels when available (here: scaled_dot_product_attention's own choice)")
    cond_drop: float = arg(0.1, "condition dropout rate in training (classifier-free guidance); upstream hard-coded 0.1")
    ls: float = arg(0.0, "label smoothing of the training cross-entropy")
    intra_steps: int = arg(1, "EEG port (not upstream): groups per scale predicted one after another, each seeing the "
                           "tokens already placed in its scale (content tokens; exact likelihood under the group "
                           "order); 1 = upstream VAR, a scale's tokens drawn independently. Default 1 (upstream): "
                           "with --intra_nbr=4, 4 steps lowered the validation NLL by 5 %% (depth 2, eegmat, "
                           "benchmarks/bench_intra_steps.py) at half the sampling speed, but the samples' spectra "
                           "barely changed. Sampling may use fewer steps (sample.py --intra_steps)")
    intra_nbr: int = arg(4, "EEG port: with --intra_steps > 1, each query also gets the tokens already placed within "
                         "this many positions of it through a linear layer (attention alone learns neighbours slowly "
                         "on small data); 0 = attention only")
    intra_ar: int = arg(16, "EEG port: draw the tokens of a scale left to right after its one transformer pass, each "
                        "seeing the codebook vectors of this many positions before it in its scale "
                        "(models/intra_ar.py; exact likelihood). 0 = upstream VAR, a scale's tokens drawn "
                        "independently, which decodes to spectra flat inside each band. Default 16: on eegmat (depth "
                        "2, benchmarks/bench_intra_steps.py) it beat a same-scale bigram at every scale and put the "
                        "alpha peak back (within 0.12 Hz), at about a quarter of plain VAR's CPU sampling speed "
                        "at batch 1. "
                        "With --intra_steps > 1 it must be 0")
    intra_ar_fhat: int = arg(2, "EEG port: with --intra_ar > 0, the head's codebook-space term also sees the coarser "
                             "bands' reconstruction at positions i-r..i+r (r = this value; 0 = off). Residual scales "
                             "cancel part of the coarser ones; without this path samples add them up incoherently "
                             "and come out too loud in delta/theta (benchmarks/bench_intra_steps.py)")
    level_clusters: int = arg(4, "EEG port: per-window power levels, k-means clusters per class of the window's "
                              "channel-mean log band powers (utils/eeg_levels.py); VAR is conditioned on the level and "
                              "sampling draws it first from its training frequency, so samples vary like windows of "
                              "different subjects, not of one: on eegmat (depth 2, benchmarks/bench_intra_steps.py) the "
                              "samples' beta and gamma spread came near the real one, the alpha peak's prominence error "
                              "fell from 3.6 to 3.0 dB and the NLL fell at every scale. 0 = class only")
    calib_n: int = arg(256, "EEG port: at the end of training, draw this many samples per class from each checkpoint "
                       "(sample.py's defaults) and store the band gain that gives them the mean log band power of the "
                       "real training windows of their class and level (VAR/sample_calib.py); sample.py applies it. On "
                       "eegmat it lowered the held-out C2ST from 0.94 / 0.91 to 0.90 / 0.75 (rest / arithmetic). "
                       "0 = off (samples get the band-gain codes' class-and-level gain)")
    intra_mix: float = arg(0.25, "fraction of training steps that use a random coarser step schedule, so that "
                           "sampling with fewer steps than --intra_steps stays in distribution")
    # ---- data geometry
    pn: str = arg("auto", "scale layout, e.g. 6_11_17_39_64; 'auto' takes v_patch_nums from the tokenizer (must match)")
    hflip: bool = arg(False, "upstream's horizontal flip; EEG has no equivalent: must stay 0")
    mid_reso: float = arg(1.125, "upstream's resize-then-crop ratio; EEG windows are stored at their final length (unused)")
    # ---- progressive training
    pg: float = arg(0.0, "> 0: progressive training over the first pg fraction of iterations")
    pg0: int = arg(4, "first progressive stage (scale index, clipped to the number of scales - 1)")
    pgwp: float = arg(0.0, "warm-up epochs of each new progressive stage; 0 = ep / 300")
    # ---- derived from the tokenizer
    patch_nums: tuple = derived((), "scale layout (tokens per scale), from the tokenizer")
    patch_size: int = derived(0, "tokenizer downsampling factor (samples per latent position)")
    resos: tuple = derived((), "samples per token at each scale... expressed as pn * patch_size")
    data_load_reso: int = derived(0, "window length in samples")

    def validate(self) -> None:
        super().validate()
        if not self.data_path:
            raise UserError("--data_path is required: pass the dataset root made by python -m utils.data_eeg build")
        if not os.path.isdir(self.data_path):
            raise UserError(f"--data_path={self.data_path}: not a folder; pass the dataset root holding train/ and val/")
        if not self.vae_ckpt:
            raise UserError("--vae_ckpt is required: pass the tokenizer checkpoint (vae-ckpt-best.pth) from VAR/train_vae.py")
        if not os.path.isfile(self.vae_ckpt):
            raise UserError(f"--vae_ckpt={self.vae_ckpt}: file not found; pass vae-ckpt-best.pth or vae-ckpt-last.pth "
                            "written by VAR/train_vae.py")
        if self.depth < 1:
            raise UserError(f"--depth={self.depth}: expected an integer >= 1")
        if self.hflip:
            raise UserError("--hflip=1: EEG has no horizontal flip (it would change the signal's meaning); "
                            "leave --hflip at 0")
        if not 0 <= self.cond_drop < 1:
            raise UserError(f"--cond_drop={self.cond_drop}: expected a rate in [0, 1)")
        if not 0 <= self.pg < 1:
            raise UserError(f"--pg={self.pg}: expected a fraction in [0, 1) (0 = off)")
        if not 0 <= self.ls < 1:
            raise UserError(f"--ls={self.ls}: expected a label smoothing in [0, 1)")
        if self.intra_steps < 1:
            raise UserError(f"--intra_steps={self.intra_steps}: expected an integer >= 1 (1 = upstream VAR)")
        if self.intra_nbr < 0:
            raise UserError(f"--intra_nbr={self.intra_nbr}: expected a neighbour radius >= 0")
        if self.intra_ar_fhat < 0:
            raise UserError(f"--intra_ar_fhat={self.intra_ar_fhat}: expected a half-width >= 0 (0 = off)")
        if self.calib_n < 0:
            raise UserError(f"--calib_n={self.calib_n}: expected a number of samples per class >= 0 (0 = off)")
        if 0 < self.calib_n < 8:
            raise UserError(f"--calib_n={self.calib_n}: too few samples to measure a band gain; use at least 8 "
                            "(default 256) or 0 to turn the calibration off")
        if self.level_clusters < 0:
            raise UserError(f"--level_clusters={self.level_clusters}: expected a number of clusters >= 0 (0 = off)")
        if self.intra_ar < 0:
            raise UserError(f"--intra_ar={self.intra_ar}: expected a number of positions >= 0 (0 = off)")
        if self.intra_ar > 0 and self.intra_steps > 1:
            raise UserError(f"--intra_ar={self.intra_ar} with --intra_steps={self.intra_steps}: choose one way of "
                            "drawing the tokens inside a scale (add --intra_ar=0 to use steps)")
        if not 0 <= self.intra_mix <= 1:
            raise UserError(f"--intra_mix={self.intra_mix}: expected a fraction in [0, 1]")
        for flag in ("vfast", "tfast"):
            if getattr(self, flag) not in (0, 1, 2, 3):
                raise UserError(f"--{flag}={getattr(self, flag)}: expected 0, 1, 2 or 3")

    def derive(self, world_size: int, device: str = "cpu") -> None:
        super().derive(world_size, device)
        if self.pgwp == 0:
            self.pgwp = self.ep / 300
        if self.pg > 0:
            self.sche = f"lin{self.pg:g}"

    def tb_name(self) -> str:
        return f"tb-VARd{self.depth}__pn{self.pn}__b{self.bs}ep{self.ep}{self.opt[:4]}lr{self.tblr:g}wd{self.twd:g}"

    def set_tokenizer_geometry(self, v_patch_nums: Sequence[int], downsample: int, n_times: int) -> None:
        """Fill the scale-layout fields from the tokenizer (derived, like upstream's pn expansion).

        Raises
        ------
        UserError
            If ``--pn`` was given and differs from the tokenizer's layout.
        """
        pns = tuple(int(p) for p in v_patch_nums)
        if self.pn not in ("auto", ""):
            try:
                want = tuple(int(x) for x in re.split(r"[_\-,]", self.pn) if x)
            except ValueError:
                raise UserError(f"--pn={self.pn!r}: expected 'auto' or lengths like 6_11_17_39_64") from None
            if want != pns:
                raise UserError(f"--pn={self.pn} but the tokenizer {self.vae_ckpt} was trained with scale layout "
                                f"{'_'.join(map(str, pns))}; pass --pn=auto or that layout")
        self.patch_nums = pns
        self.patch_size = int(downsample)
        self.resos = tuple(p * int(downsample) for p in pns)
        self.data_load_reso = int(n_times)


def init_dist_and_get_args(argv: Sequence[str] | None = None, cls: type[BaseArgs] = Args,
                           device: str | None = None) -> tuple[BaseArgs, Any]:
    """Parse flags, initialise the process group, start the stdout/stderr tee, seed, derive.

    Parameters
    ----------
    argv : sequence of str | None
        Command-line flags (default ``sys.argv[1:]``).
    cls : type
        :class:`Args` for VAR, the tokenizer's subclass of :class:`BaseArgs` for ``train_vae.py``.
    device : str | None
        Force a device (``'cpu'``), else ``cuda:LOCAL_RANK`` when CUDA exists.

    Returns
    -------
    args : BaseArgs
    tees : tuple | None
        The stdout/stderr tees; pass them to :func:`utils.misc.stop_tee` when done.
    """
    args = cls.parse(argv)
    dist.initialize(device=device)
    args.derive(dist.get_world_size(), str(dist.get_device()))
    tees = misc.start_tee(args.local_out_dir_path)
    args.set_tf32(args.tf32)
    args.seed_everything(benchmark=getattr(args, "pg", 0) == 0)
    return args, tees

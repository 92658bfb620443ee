"""VAR training machinery: lr/wd schedule values, batch derivation, flag parsing, the resumable sampler,
auto-resume by progress, AMP optimizer, single-process collectives."""
from __future__ import annotations

import math
import os

import pytest
import torch

import dist
from utils import arg_util, misc
from utils.amp_sc import AmpOptimizer
from utils.checkpoint import save_checkpoint
from utils.data_sampler import DistInfiniteBatchSampler, EvalDistributedSampler
from utils.errors import UserError
from utils.lr_control import filter_params, lr_ratio, lr_wd_annealing


def test_lr_schedule_values():
    wp0, wpe, wp_it, max_it = 0.005, 0.01, 10, 110
    peak = 3e-4
    opt = torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.zeros(2, 2))], "lr_sc": 1.0, "wd_sc": 1.0},
                             {"params": [torch.nn.Parameter(torch.zeros(2))], "lr_sc": 1.0, "wd_sc": 0.0}], lr=peak)
    lr_at = lambda it: lr_wd_annealing("lin0", opt, peak, 0.05, 0.01, it, wp_it, max_it, wp0, wpe)[1]  # noqa: E731
    assert lr_at(0) == pytest.approx(wp0 * peak)
    assert lr_at(5) == pytest.approx((wp0 + (1 - wp0) * 0.5) * peak)
    assert lr_at(10) == pytest.approx(peak)
    # 'lin0': flat for 5 % of the post-warm-up run, then linear down to wpe at the last iteration
    assert lr_at(10 + 4) == pytest.approx(peak)
    assert lr_at(max_it - 1) == pytest.approx(wpe * peak)
    p = (60 - wp_it) / (max_it - 1 - wp_it)
    assert lr_at(60) == pytest.approx((wpe + (1 - wpe) * (1 - p) / 0.95) * peak)
    # weight decay: half cosine from twd to twde over the whole run; the no-decay group stays at 0
    _, _, _, wd0 = lr_wd_annealing("lin0", opt, peak, 0.05, 0.01, 0, wp_it, max_it, wp0, wpe)
    _, _, _, wd_end = lr_wd_annealing("lin0", opt, peak, 0.05, 0.01, max_it - 1, wp_it, max_it, wp0, wpe)
    assert wd0 == pytest.approx(0.05) and wd_end == pytest.approx(0.01)
    assert opt.param_groups[1]["weight_decay"] == 0.0
    assert lr_ratio("cos", wp_it, wp_it, max_it, wp0, wpe) == pytest.approx(1.0)
    assert lr_ratio("cos", max_it - 1, wp_it, max_it, wp0, wpe) == pytest.approx(wpe)
    with pytest.raises(NotImplementedError):
        lr_ratio("bogus", 50, wp_it, max_it)


def test_filter_params_groups():
    m = torch.nn.Module()
    m.lin = torch.nn.Linear(3, 3)
    m.pos_1LC = torch.nn.Parameter(torch.zeros(1, 4, 3))
    m.frozen = torch.nn.Parameter(torch.zeros(3, 3), requires_grad=False)
    names, paras, groups = filter_params(m, nowd_keys={"pos_1LC"})
    assert set(names) == {"lin.weight", "lin.bias", "pos_1LC"}
    decay = [g for g in groups if g["wd_sc"] == 1.0][0]["params"]
    assert len(decay) == 1 and decay[0] is m.lin.weight


@pytest.mark.parametrize("bs,ac,world,expect_local", [(768, 1, 8, 96), (768, 2, 8, 48), (10, 1, 3, 3), (64, 4, 1, 16)])
def test_batch_and_lr_derivation(tmp_path, bs, ac, world, expect_local):
    args = arg_util.Args.parse([f"--bs={bs}", f"--ac={ac}", f"--data_path={tmp_path}", f"--vae_ckpt={__file__}",
                                "--tblr=1e-4", f"--local_out_dir_path={tmp_path}/out", "--ep=100"])
    args.derive(world_size=world)
    assert args.batch_size == expect_local == round(bs / ac / world)
    assert args.glb_batch_size == expect_local * world
    assert args.bs == args.glb_batch_size * ac
    assert args.tlr == pytest.approx(ac * 1e-4 * args.glb_batch_size / 256)
    assert args.twde == args.twd and args.wp == pytest.approx(2.0) and args.pgwp == pytest.approx(100 / 300)
    assert args.last_ckpt_path == os.path.join(str(tmp_path), "out", "ar-ckpt-last.pth")


def test_defaults_that_depart_from_upstream_are_the_measured_ones_and_say_so(tmp_path, capsys):
    args = arg_util.Args.parse([f"--data_path={tmp_path}", f"--vae_ckpt={__file__}", "--bs=32",
                                f"--local_out_dir_path={tmp_path}/my_run"])
    args.derive(world_size=1)
    assert args.tblr == 8e-3 and args.tlr == pytest.approx(8e-3 * 32 / 256)  # upstream's 1e-4 gives 1.25e-5 here
    assert args.exp_name == "my_run"  # not upstream's placeholder "text"
    with pytest.raises(SystemExit):
        arg_util.Args.parse(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "not upstream's 1e-4" in text
    assert text.count("(default: 0.008)") == 0  # the help states its default once, in words
    import sample
    help_text = " ".join(sample.build_parser().format_help().split())
    assert "(default: every class)" in help_text and "(default: None)" not in help_text


def test_flag_parsing_rules(tmp_path, capsys):
    base = [f"--data_path={tmp_path}", f"--vae_ckpt={__file__}"]
    a = arg_util.Args.parse(base + ["--saln=1", "--anorm=false", "--seed=3", "--tlr=None", "--fp16", "2"])
    assert a.saln is True and a.anorm is False and a.seed == 3 and a.tlr is None and a.fp16 == 2
    assert arg_util.Args.parse(base + ["--local-rank=0", "--depth=4"]).depth == 4  # legacy launcher flag dropped
    for bad in (["--dpeth=4"], ["--depth=x"], ["--saln=maybe"], ["--batch_size=3"]):  # typo, type, bool, derived
        with pytest.raises(SystemExit) as exc:
            arg_util.Args.parse(base + bad)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("train.py: error:") and "\n" not in err
    with pytest.raises(UserError, match="--hflip"):
        arg_util.Args.parse(base + ["--hflip=1"])
    with pytest.raises(UserError, match="--data_path is required"):
        arg_util.Args.parse([f"--vae_ckpt={__file__}"])
    with pytest.raises(UserError, match="--vae_ckpt=.*nope.pth: file not found"):
        arg_util.Args.parse([f"--data_path={tmp_path}", f"--vae_ckpt={tmp_path}/nope.pth"])
    with pytest.raises(UserError, match="--pn=1_2_3 but the tokenizer"):
        b = arg_util.Args.parse(base + ["--pn=1_2_3"])
        b.set_tokenizer_geometry((6, 11, 17, 39, 64), 4, 256)


def test_typo_suggestion(tmp_path, capsys):
    with pytest.raises(SystemExit):
        arg_util.Args.parse([f"--data_path={tmp_path}", "--dpeth=4"])
    assert "did you mean: --dpeth -> --depth" in capsys.readouterr().err


def _epoch_batches(sampler: DistInfiniteBatchSampler, n: int) -> list[list[int]]:
    it = iter(sampler)
    return [next(it) for _ in range(n)]


@pytest.mark.parametrize("world", [1, 2])
def test_sampler_resume_matches_uninterrupted(world):
    N, glb = 23, 6  # 4 iterations per epoch, last batch filled
    full = {r: _epoch_batches(DistInfiniteBatchSampler(world, r, N, glb, fill_last=True), 12) for r in range(world)}
    for r in range(world):
        resumed = _epoch_batches(DistInfiniteBatchSampler(world, r, N, glb, fill_last=True, start_ep=1, start_it=3), 5)
        assert resumed == full[r][4 * 1 + 3: 4 * 1 + 3 + 5]  # fix(upstream): start_it is honoured
        assert all(len(b) == glb // world for b in full[r])
    # every epoch covers the whole dataset across ranks, in a different order each epoch
    for ep in range(3):
        seen = sorted(i for r in range(world) for b in full[r][4 * ep: 4 * ep + 4] for i in b)
        assert set(seen) == set(range(N))
    assert full[0][0:4] != full[0][4:8]


def test_eval_sampler_shards():
    ds = list(range(10))
    parts = [list(EvalDistributedSampler(ds, 3, r)) for r in range(3)]
    assert sum(parts, []) == ds and all(len(p) in (3, 4) for p in parts)


def test_auto_resume_picks_most_progress(tmp_path):
    out = str(tmp_path)
    info, ep, it, state, used = misc.auto_resume(out)
    assert (ep, it, state, used) == (0, 0, {}, None)
    save_checkpoint(os.path.join(out, "ar-ckpt-best.pth"), {"epoch": 3, "iter": 0, "x": torch.ones(1)})
    save_checkpoint(os.path.join(out, "ar-ckpt-last.pth"), {"epoch": 4, "iter": 7, "x": torch.zeros(1)})
    os.utime(os.path.join(out, "ar-ckpt-best.pth"))  # newer file time must not matter (fix(upstream) §18.5)
    _, ep, it, state, used = misc.auto_resume(out)
    assert (ep, it) == (4, 7) and used.endswith("ar-ckpt-last.pth")
    # a damaged newest file falls back to its .prev copy
    save_checkpoint(os.path.join(out, "ar-ckpt-last.pth"), {"epoch": 5, "iter": 0, "x": torch.zeros(1)})
    with open(os.path.join(out, "ar-ckpt-last.pth"), "r+b") as fh:
        fh.truncate(100)
    _, ep, it, _, used = misc.auto_resume(out)
    assert (ep, it) == (4, 7) and used.endswith("ar-ckpt-last.prev.pth")


@pytest.mark.parametrize("fp16,tclip", [(0, 2.0), (0, 0.0), (2, 1.0)])
def test_amp_optimizer_returns_grad_norm_and_skips_nonfinite(fp16, tclip):
    torch.manual_seed(0)
    m = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(m.parameters(), lr=0.1)
    ao = AmpOptimizer(fp16, opt, ["w", "b"], list(m.parameters()), grad_clip=tclip, n_gradient_accumulation=2,
                      device_type="cpu")
    x = torch.randn(8, 4)
    with ao.amp_ctx:
        loss = m(x).float().pow(2).mean()
    assert ao.backward_clip_step(stepping=False, loss=loss) == (None, None)
    with ao.amp_ctx:
        loss = m(x).float().pow(2).mean()
    w0 = m.weight.detach().clone()
    norm, _ = ao.backward_clip_step(stepping=True, loss=loss)  # fix(upstream) §18.2: a norm also without clipping
    assert norm is not None and math.isfinite(float(norm)) and not ao.last_step_skipped
    assert not torch.equal(w0, m.weight) and m.weight.grad is None
    w1 = m.weight.detach().clone()
    with ao.amp_ctx:
        loss = m(x).float().pow(2).mean() * float("nan")
    norm, _ = ao.backward_clip_step(stepping=True, loss=loss)
    assert ao.last_step_skipped and torch.equal(w1, m.weight)


def test_single_process_collectives_and_meters():
    dist.initialize(device="cpu")
    assert dist.get_world_size() == 1 and dist.is_master() and not dist.initialized()
    t = torch.tensor([1.0, 2.0])
    dist.allreduce(t)
    dist.broadcast(t)
    assert torch.equal(t, torch.tensor([1.0, 2.0])) and torch.equal(dist.allgather(t), t)
    me = misc.MetricLogger()
    me.update(a=1.0, b=None)
    me.update(a=3.0)
    me.synchronize_between_processes()  # fix(upstream) §18.3: works without a process group
    assert me.meters["a"].global_avg == 2.0 and "b" not in me.meters


def test_dump_log_header_once(tmp_path):
    args = arg_util.Args.parse([f"--data_path={tmp_path}", f"--vae_ckpt={__file__}",
                                f"--local_out_dir_path={tmp_path}/o"])
    args.derive(1)
    for ep in (1, 11, 21):  # fix(upstream) §18.4: no truncation at epochs containing "1/"
        args.dump_log({"cur_ep": f"{ep}/30"})
    lines = [ln for ln in open(args.log_txt_path).read().splitlines() if ln.strip()]
    assert len(lines) == 4 and '"cmd"' in lines[0]


@pytest.mark.parametrize("world_size, teardown_runs", [("1", True), ("2", False)])
def test_exit_worker_skips_interpreter_teardown_only_under_torchrun(tmp_path, world_size, teardown_runs):
    """Under torchrun the worker leaves with os._exit (no atexit handlers, no teardown), after flushing what it
    printed; a single process exits normally. Both keep the exit status."""
    import subprocess
    import sys
    script = tmp_path / "worker.py"
    script.write_text(
        "import atexit, logging, sys\n"
        f"sys.path.insert(0, {os.path.dirname(dist.__file__)!r})\n"
        "import dist\n"
        "logging.basicConfig(filename=sys.argv[1], level=logging.INFO)\n"
        "atexit.register(lambda: print('teardown ran'))\n"
        "print('work done')  # block-buffered into a pipe: lost unless flushed before os._exit\n"
        "logging.getLogger('w').info('logged')\n"
        "dist.exit_worker(3)\n")
    log = tmp_path / "worker.log"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["WORLD_SIZE"] = world_size
    proc = subprocess.run([sys.executable, str(script), str(log)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 3
    assert proc.stdout.splitlines() == ["work done"] + (["teardown ran"] if teardown_runs else [])
    assert "logged" in log.read_text()

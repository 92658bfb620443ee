"""The tokenizer's optional waveform discriminator (``--disc_w`` / ``--fm_w``): losses against their formulas,
what it can learn, that the tokenizer's step leaves it alone, and that training with it resumes exactly."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from utils.checkpoint import load_checkpoint
from utils.errors import UserError

from models.eeg_discriminator import (WaveDiscriminator, discriminator_hinge_loss, feature_matching_loss,  # noqa: E402
                                      generator_hinge_loss)
import train_vae  # noqa: E402


def test_hinge_losses_match_their_formulas():
    real = [torch.tensor([[[0.5, 2.0]]]), torch.tensor([[[-1.0]]])]
    fake = [torch.tensor([[[-3.0, 0.0]]]), torch.tensor([[[0.5]]])]
    # resolution 0: real relu(1-0.5)=0.5, relu(1-2)=0 -> 0.25; fake relu(1-3)=0, relu(1+0)=1 -> 0.5
    # resolution 1: real relu(1+1)=2; fake relu(1+0.5)=1.5
    assert float(discriminator_hinge_loss(real, fake)) == pytest.approx(0.25 + 0.5 + 2.0 + 1.5)
    # the decoder's term: relu(1+3)=4, relu(1-0)=1 -> 2.5; relu(1-0.5)=0.5
    assert float(generator_hinge_loss(fake)) == pytest.approx(2.5 + 0.5)


def test_feature_matching_is_relative_l1_and_leaves_the_real_side_alone():
    g = torch.Generator().manual_seed(0)
    real = [torch.randn(2, 3, 5, generator=g, requires_grad=True), torch.randn(2, 4, 3, generator=g, requires_grad=True)]
    assert float(feature_matching_loss(real, [r.detach().clone() for r in real])) == 0.0
    fake = [(2 * r).detach().requires_grad_(True) for r in real]  # |2r - r| / |r| = 1 in every layer
    loss = feature_matching_loss(real, fake)
    assert float(loss.detach()) == pytest.approx(1.0)
    loss.backward()
    assert all(r.grad is None for r in real) and all(f.grad is not None for f in fake)


def test_discriminator_shapes_and_bad_sizes():
    d = WaveDiscriminator(19, hidden=8, n_layers=3, n_resolutions=2)
    logits, feats = d(torch.zeros(2, 19, 500))
    assert [tuple(lo.shape) for lo in logits] == [(2, 1, 63), (2, 1, 32)]  # 500 -> 250 -> 125 -> 63; 250 -> ... 32
    assert len(feats) == 2 * 4  # the electrode mix and 3 strided layers per resolution
    with pytest.raises(ValueError, match='odd kernel'):
        WaveDiscriminator(19, kernel=4)


def test_discriminator_learns_spatial_correlation():
    """Windows whose two channels share their signal against windows with independent channels of the same power
    spectrum: only the electrode mix can tell them apart, and a short hinge-loss training does."""
    g = torch.Generator().manual_seed(0)
    d = WaveDiscriminator(2, hidden=8, n_layers=2, n_resolutions=1)
    opt = torch.optim.Adam(d.parameters(), lr=3e-3, betas=(0.5, 0.9))

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = torch.randn(n, 1, 128, generator=g)
        shared = torch.cat([s, s], dim=1)
        return shared, torch.randn(n, 2, 128, generator=g)

    for _ in range(150):
        real, fake = batch(32)
        loss = discriminator_hinge_loss(d(real)[0], d(fake)[0])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        real, fake = batch(256)
        score_real = torch.cat([lo.mean((1, 2)) for lo in d(real)[0]])
        score_fake = torch.cat([lo.mean((1, 2)) for lo in d(fake)[0]])
    # the fraction of (real, fake) pairs ranked right: the AUC of the window score
    auc = (score_real[:, None] > score_fake[None, :]).double().mean().item()
    assert auc > 0.95


@pytest.fixture(scope='module')
def synth(tmp_path_factory) -> str:
    from prototypes.synthetic_eeg import SyntheticConfig, make_dataset
    root = str(tmp_path_factory.mktemp('disc') / 'ds')
    make_dataset(root, SyntheticConfig(n_channels=3, sfreq=100.0, window_sec=1.28, n_windows=24,
                                       windows_per_recording=4, seed=0))
    return root


FLAGS = ['--bs=4', '--save_ep=1', '--seed=0', '--vocab_size=16', '--z_channels=4', '--ch=8', '--ch_mult=1_2_2',
         '--workers=0', '--disc_w=0.1', '--fm_w=1', '--disc_start_ep=1', '--disc_ch=8']


def _run(data: str, out: str, *extra: str) -> int:
    return train_vae.main_training([f'--data_path={data}', f'--local_out_dir_path={out}', *FLAGS, *extra])


def _log(out: str) -> list[dict]:
    with open(os.path.join(out, 'log.txt'), encoding='utf-8') as fh:
        return [json.loads(ln) for ln in fh.read().split('\n\n', 1)[1].splitlines() if ln.strip()]


def test_tokenizer_step_does_not_move_the_discriminator(synth, tmp_path):
    """The adversarial terms reach the tokenizer only: after its backward the discriminator holds no gradient
    (otherwise the decoder's objective would leak into the discriminator's next step)."""
    from utils.vae_arg_util import VAEArgs
    args = VAEArgs.parse([f'--data_path={synth}', f'--local_out_dir_path={tmp_path / "o"}', *FLAGS])
    args.derive(1, 'cpu')
    parts = train_vae.build_everything(args)
    trainer = parts['trainer']
    stages, _ = next(iter(parts['ld_train']))
    loss, p = trainer.compute_loss(stages, adversarial=True)
    loss.backward()
    assert all(q.grad is None for q in trainer.disc.parameters())
    assert any(q.grad is not None and q.grad.abs().sum() > 0 for q in trainer.vae_wo_ddp.parameters())
    assert float(p['adv']) > 0 and float(p['fm']) > 0
    assert not trainer.adversarial_at(trainer.disc_start_it - 1) and trainer.adversarial_at(trainer.disc_start_it)


def test_training_with_the_discriminator_resumes_exactly(synth, tmp_path):
    ref = str(tmp_path / 'ref')
    assert _run(synth, ref, '--ep=3') == 0
    logs = _log(ref)
    # its losses join from --disc_start_ep=1: none in the first epoch, all three after
    assert 'Ladv' not in logs[0] and all(k in logs[1] for k in ('Ladv', 'Lfm', 'Ldisc'))
    assert logs[-1]['best_ep'] >= 1  # the best checkpoint comes from an epoch trained with the discriminator
    a = load_checkpoint(os.path.join(ref, 'vae-ckpt-last.pth'))[0]
    assert 'disc' in a['trainer'] and 'disc_opt' in a['trainer']
    # resume from the epoch-2 state and finish epoch 3: the same tokenizer and discriminator
    out = str(tmp_path / 'resumed')
    os.makedirs(out)
    shutil.copy(os.path.join(ref, 'vae-ckpt-last.prev.pth'), os.path.join(out, 'vae-ckpt-last.pth'))
    assert load_checkpoint(os.path.join(out, 'vae-ckpt-last.pth'))[0]['epoch'] == 2
    assert _run(synth, out, '--ep=3') == 0
    b = load_checkpoint(os.path.join(out, 'vae-ckpt-last.pth'))[0]
    for key in ('vae_wo_ddp', 'disc'):
        src_a = a[key] if key == 'vae_wo_ddp' else a['trainer'][key]
        src_b = b[key] if key == 'vae_wo_ddp' else b['trainer'][key]
        for k, v in src_a.items():
            assert torch.allclose(v, src_b[k], atol=1e-6), (key, k)


def test_best_checkpoint_comes_from_an_epoch_trained_with_the_discriminator(synth, tmp_path):
    """A strong adversarial weight without clipping costs SNR in the last epoch, the only one trained with the
    discriminator; the best checkpoint is still that epoch, not an earlier one with a higher SNR."""
    out = str(tmp_path / 'best')
    assert _run(synth, out, '--ep=3', '--disc_start_ep=2', '--disc_w=10000', '--fm_w=0', '--tclip=0') == 0
    logs = _log(out)
    full = [list(d['val_snr_db_plain'].values())[-1] for d in logs]
    assert max(full[:2]) > full[2]  # the earlier epochs would have won on SNR alone
    assert logs[-1]['best_ep'] == 2
    assert load_checkpoint(os.path.join(out, 'vae-ckpt-best.pth'))[0]['epoch'] == 3


def test_bad_discriminator_flags_are_one_line_errors(synth, tmp_path):
    with pytest.raises(UserError, match=r'--disc_w=-1.0'):
        _run(synth, str(tmp_path / 'bad'), '--ep=1', '--disc_w=-1')
    with pytest.raises(UserError, match=r'--disc_start_ep=3 is not before the last epoch \(--ep=3\)'):
        _run(synth, str(tmp_path / 'bad'), '--ep=3', '--disc_start_ep=3')
    assert not os.path.exists(os.path.join(tmp_path, 'bad', 'vae-ckpt-last.pth'))


def test_discriminator_under_ddp_two_cpu_processes(synth, tmp_path, repo_root):
    """torchrun with two processes: the discriminator's step goes through DDP, the tokenizer's through its own."""
    out = str(tmp_path / 'ddp')
    env = dict(os.environ, OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'VAR/train_vae.py',
           f'--data_path={synth}', f'--local_out_dir_path={out}', *FLAGS, '--ep=2']
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=repo_root, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = load_checkpoint(os.path.join(out, 'vae-ckpt-last.pth'))[0]
    assert state['args']['world_size'] == 2 and state['epoch'] == 2 and 'disc' in state['trainer']
    last = _log(out)[-1]
    assert all(np.isfinite(last[k]) for k in ('Ladv', 'Lfm', 'Ldisc'))

#!/usr/bin/env bash
# GPU checks for a machine with one or more CUDA GPUs: the CUDA/NCCL code paths end to end, AMP bf16/fp16
# training, and the GPU numbers (training step time and MFU at depth 4-20 in bf16;
# next-scale vs next-token sampling speed).
#
#   bash benchmarks/device_check.sh OUT [--python PY] [--wheels DIR] [--skip smoke,train,speed,quality] [--cpu]
#                                       [--recordings EEGMAT_DIR --vae-ckpt PATH] [--depth D --ep N --bs B --tblr LR]
#
# OUT receives device_check.log, smoke.tsv (one line per end-to-end check: name, status, seconds),
# train_cuda.json, speed_cuda.json and speed_ratio_cuda.png. With --recordings (the eegmat EDF files) and
# --vae-ckpt (a band tokenizer trained on the same time-split dataset) it also trains VAR on the GPU (bf16) and
# runs bench_var --split-by time, bench_generation and bench_zeroshot there (quality section), packing their
# JSON and PNG files into OUT/quality_results.tar. Copy the JSON/PNG files into benchmarks/results/ and run
# `python -m benchmarks.report` to put them into the README.
# --wheels DIR installs the wheels in DIR first (for a machine without the project's dependencies and no
# package index: mne and what it needs beyond torch/numpy/scipy/matplotlib).
# --cpu is a dry run of the same script on a machine without a GPU (gloo, fp32 sampling, tiny benchmarks).
# Every check runs even when an earlier one fails; the exit status is the number of failed checks.
set -uo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }
[ $# -ge 1 ] || { usage >&2; exit 2; }
case "$1" in -h|--help) usage; exit 0 ;; esac
out="$1"; shift
py="python3"; wheels=""; skip=""; dev=cuda; recordings=""; vae=""; qdepth=8; qep=100; qbs=32; qtblr=4e-3
while [ $# -gt 0 ]; do
  case "$1" in
    --python) py="$2"; shift 2 ;;
    --wheels) wheels="$2"; shift 2 ;;
    --skip) skip="$2"; shift 2 ;;
    --cpu) dev=cpu; shift ;;
    --recordings) recordings="$2"; shift 2 ;;
    --vae-ckpt) vae="$2"; shift 2 ;;
    --depth) qdepth="$2"; shift 2 ;;
    --ep) qep="$2"; shift 2 ;;
    --bs) qbs="$2"; shift 2 ;;
    --tblr) qtblr="$2"; shift 2 ;;
    *) echo "device_check.sh: error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$out"; out="$(cd "$out" && pwd)"
cd "$repo"
export PYTHONUNBUFFERED=1 PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec > >(tee -a "$out/device_check.log") 2>&1
work="$(mktemp -d)"
failed=0
t_all=$(date +%s)

check() {  # check NAME CMD...: run, time, record
  local name="$1"; shift
  local t0=$(date +%s%N) st
  echo; echo "=== $name: $*"
  if "$@"; then st=ok; else st="failed($?)"; failed=$((failed + 1)); fi
  printf '%s\t%s\t%d ms\n' "$name" "$st" $(( ($(date +%s%N) - t0) / 1000000 )) | tee -a "$out/smoke.tsv"
}
skipped() { [[ ",$skip," == *",$1,"* ]]; }

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
if [ -n "$wheels" ]; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$work/site" \
      "$wheels"/*.whl && export PYTHONPATH="$PYTHONPATH:$work/site"
fi
"$py" -c "import torch, numpy, scipy; print('torch', torch.__version__, 'cuda', torch.version.cuda,
print_ok := torch.cuda.is_available(), torch.cuda.get_device_name(0) if print_ok else '')"

if ! skipped smoke; then
  data="$work/syn"; tok="$work/tok"; var="$work/var"
  check nccl_allreduce "$py" -c "
import os, torch, torch.distributed as dist
cuda = '$dev' == 'cuda'
dist.init_process_group('nccl' if cuda else 'gloo', init_method='tcp://127.0.0.1:29533', rank=0, world_size=1)
t = torch.ones(4, device='$dev'); dist.all_reduce(t)
assert t.sum().item() == 4, t; dist.destroy_process_group(); print(dist.Backend.NCCL if cuda else 'gloo', 'ok')"
  check synthetic_dataset "$py" -m prototypes.synthetic_eeg "$data" --channels 8 --sfreq 100 --window-sec 2 \
      --n-windows 160 --windows-per-recording 8 --seed 0
  check tokenizer_bf16 "$py" VAR/train_vae.py --data_path="$data" --ep=3 --bs=16 --fp16=2 --seed=0 \
      --local_out_dir_path="$tok"
  check reconstruct_cuda "$py" VAR/reconstruct.py --vae_ckpt="$tok/vae-ckpt-best.pth" --data_path="$data" \
      --split=val --out="$work/recon.npz"
  check var_torchrun_bf16 "$py" -m torch.distributed.run --standalone --nproc_per_node=1 VAR/train.py --depth=4 --bs=16 --ep=3 --fp16=2 \
      --seed=0 --data_path="$data" --vae_ckpt="$tok/vae-ckpt-best.pth" --local_out_dir_path="$var"
  check var_resume_bf16 "$py" -m torch.distributed.run --standalone --nproc_per_node=1 VAR/train.py --depth=4 --bs=16 --ep=5 --fp16=2 \
      --seed=0 --data_path="$data" --vae_ckpt="$tok/vae-ckpt-best.pth" --local_out_dir_path="$var"
  check var_resumed_from_ep3 grep -rq "resuming from .* at epoch 3" "$var"
  check var_fp16_gradscaler "$py" VAR/train.py --depth=4 --bs=16 --ep=2 --fp16=1 --seed=0 --data_path="$data" \
      --vae_ckpt="$tok/vae-ckpt-best.pth" --local_out_dir_path="$work/var16"
  check ar_baseline_cuda "$py" VAR/train.py --ar_baseline=1 --depth=4 --bs=16 --ep=2 --fp16=2 --seed=0 \
      --data_path="$data" --vae_ckpt="$tok/vae-ckpt-best.pth" --local_out_dir_path="$work/ar"
  check sample_cuda "$py" VAR/sample.py --ckpt="$var/ar-ckpt-best.pth" --n=4 --out="$work/s.npz" --seed=0 \
      --device=$dev --plot="$work/s.png" --data_path="$data"
  check sample_seed_determinism "$py" -c "
import subprocess, sys, numpy as np
subprocess.run([sys.executable, 'VAR/sample.py', '--ckpt=$var/ar-ckpt-best.pth', '--n=4', '--out=$work/s2.npz',
                '--seed=0', '--device=$dev'], check=True)
a, b = np.load('$work/s.npz'), np.load('$work/s2.npz')
key = [k for k in a.files if a[k].dtype.kind == 'f'][0]
assert np.array_equal(a[key], b[key]), 'same seed, different samples on CUDA'; print('identical', key, a[key].shape)"
  check complete_fill_gap_cuda "$py" VAR/complete.py --ckpt="$var/ar-ckpt-best.pth" --data_path="$data" \
      --mode=fill_gap --gap=0.5:1.0 --n_samples=2 --n=4 --device=$dev --out="$work/gap.npz"
fi

if ! skipped train; then
  if [ "$dev" = cuda ]; then targs=(--depths 16,20 --bs 64 --steps 5 --skip-sampling); else targs=(--quick); fi
  check bench_train_bf16 "$py" -m benchmarks.bench_train --device "$dev" --amp bf16 "${targs[@]}" \
      --results-dir "$out" --timeout 300
fi
if ! skipped speed; then
  if [ "$dev" = cuda ]; then sargs=(--depths 4,8,16 --batches 1,32 --ar-full-max-tokens 1 --repeats 3); else sargs=(--quick); fi
  check bench_speed "$py" -m benchmarks.bench_speed --device "$dev" "${sargs[@]}" --results-dir "$out"
fi
if ! skipped quality && [ -n "$recordings" ] && [ -n "$vae" ]; then
  res="$work/res"; ds="$work/eegmat_t25"; mkdir -p "$res"
  pack() { (cd "$res" && tar -cf "$out/quality_results.tar" $(ls *.json *.png 2>/dev/null | grep -v '\.prev\.')); }
  amp=2; [ "$dev" = cuda ] || amp=0
  # the eegmat benchmark build flags, one per line, from their single definition
  mapfile -t bargs < <("$py" -c 'from benchmarks.bench_baselines import eegmat_build_args as a; print("\n".join(a(2.5, "time")))')
  check eegmat_time_split "$py" -m utils.data_eeg build --inputs "$recordings" --out "$ds" "${bargs[@]}" --jobs 8 \
      --progress off
  check bench_var_time "$py" -m benchmarks.bench_var --device "$dev" --fp16 "$amp" --split-by time \
      --data-root "$ds" --vae-ckpt "$vae" --depth "$qdepth" --ep "$qep" --bs "$qbs" --tblr "$qtblr" --save-ep 5 --save-it 0 \
      --throughput-depths '' --results-dir "$res"
  pack
  ckpt="$(ls "$res"/raw/var_run_time*/ar-ckpt-best.pth 2>/dev/null | head -1)"
  check bench_generation "$py" -m benchmarks.bench_generation --device "$dev" --amp "$([ "$dev" = cuda ] && echo bf16 || echo fp32)" \
      --var-ckpt "$ckpt" --data-root "$ds" --results-dir "$res"
  pack
  check bench_zeroshot "$py" -m benchmarks.bench_zeroshot --device "$dev" --ckpt "$ckpt" --data-root "$ds" \
      --results-dir "$res"
  pack
  tar -tvf "$out/quality_results.tar"
fi
rm -f "$out"/*.prev.json
echo; echo "device_check: $failed failed check(s) in $(( $(date +%s) - t_all )) s"; cat "$out/smoke.tsv" 2>/dev/null
exit "$failed"

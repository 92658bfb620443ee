#!/usr/bin/env bash
# The whole path, end to end, on a CPU in a few minutes:
#   dataset -> prototype -> band tokenizer -> VAR transformer -> samples -> plot of generated beside real EEG.
# Synthetic EEG by default; --recordings builds a real dataset with MNE first. Run from anywhere.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bash scripts/main.sh [--out DIR] [--recordings PATH...] [--labels RULE] [--channels SET]
                            [--tok-epochs N] [--var-epochs N] [--depth D] [--overwrite] [-h]

Sets up .venv (first run only), then runs every stage of the project on one dataset:
  1. dataset      synthetic EEG (prototypes/scripts/create_dummy_dataset.sh), or your recordings
                  (python -m utils.data_eeg build; any format MNE reads; split by subject)
  2. prototype    python -m prototypes.eeg_scale_ar_pipeline + plot_rollout
  3. tokenizer    python VAR/train_vae.py          -> OUT/tokenizer/vae-ckpt-best.pth
  4. VAR          python VAR/train.py              -> OUT/var/ar-ckpt-best.pth
  5. samples      python VAR/sample.py             -> OUT/samples.npz, OUT/samples.png (generated vs real)

options:
  --out DIR          output folder (default: runs/main); must be empty unless --overwrite
  --recordings PATH  recording files/folders/globs to build the dataset from (default: synthetic EEG)
  --labels RULE      --label-from rule for real recordings, e.g. 'regex:_1\.edf$=rest,_2\.edf$=arithmetic'
  --channels SET     channel set for real recordings: 1020-19 (default) or all
  --tok-epochs N     tokenizer epochs (default: 8)
  --var-epochs N     VAR epochs (default: 40)
  --depth D          VAR depth (default: 2)
  --overwrite        delete OUT first
EOF
}

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$repo/runs/main"
recordings=()
labels=""
channels="1020-19"
tok_epochs=8
var_epochs=40
depth=2
overwrite=0
die() { echo "main.sh: error: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --out) [ $# -ge 2 ] || die "--out needs a folder"; out="$2"; shift 2 ;;
    --labels) [ $# -ge 2 ] || die "--labels needs a rule"; labels="$2"; shift 2 ;;
    --channels) [ $# -ge 2 ] || die "--channels needs a set name"; channels="$2"; shift 2 ;;
    --tok-epochs) [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || die "--tok-epochs needs a positive integer"; tok_epochs="$2"; shift 2 ;;
    --var-epochs) [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || die "--var-epochs needs a positive integer"; var_epochs="$2"; shift 2 ;;
    --depth) [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || die "--depth needs a positive integer"; depth="$2"; shift 2 ;;
    --overwrite) overwrite=1; shift ;;
    --recordings) shift; while [ $# -gt 0 ] && [[ "$1" != --* ]]; do recordings+=("$1"); shift; done
                  [ ${#recordings[@]} -gt 0 ] || die "--recordings needs at least one path" ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
if [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ]; then
  [ "$overwrite" = 1 ] || die "$out is not empty; pass --overwrite to replace it or --out to choose another folder"
  rm -rf "$out"
fi
mkdir -p "$out"

cd "$repo"
bash prototypes/scripts/setup_uv_env.sh
py="${VENV_DIR:-$repo/.venv}/bin/python"
export PYTHONUNBUFFERED=1
t0=$(date +%s)
step() { echo; echo "=== [$(( $(date +%s) - t0 ))s] $*"; }

data="$out/data"
if [ ${#recordings[@]} -gt 0 ]; then
  step "1/5 dataset from ${#recordings[@]} input(s) -> $data"
  build=("$py" -m utils.data_eeg build --inputs "${recordings[@]}" --out "$data" --sfreq 100 --window-sec 2
         --channels "$channels" --split-by subject --seed 0)
  [ -n "$labels" ] && build+=(--label-from "$labels")
  "${build[@]}"
else
  step "1/5 synthetic dataset -> $data"
  "$py" -m prototypes.synthetic_eeg "$data" --channels 8 --sfreq 100 --window-sec 2 --n-windows 160 \
      --windows-per-recording 8 --seed 0
fi
"$py" -m utils.data_eeg info "$data"

step "2/5 prototype (next-stage Transformer) -> $out/prototype"
"$py" -m prototypes.eeg_scale_ar_pipeline --data-root "$data" --checkpoint-dir "$out/prototype" --epochs 3 \
    --batch-size 16 --d-model 64 --nhead 4 --num-layers 2 --lr 1e-3 --seed 0 --device cpu
"$py" -m prototypes.scripts.plot_rollout "$out/prototype/demo_prediction.pt" "$out/prototype/rollout.png" \
    --channel 0 --data-root "$data" --split val --sample-idx 0 --json-out "$out/prototype/rollout_metrics.json"

step "3/5 band tokenizer -> $out/tokenizer"
"$py" VAR/train_vae.py --data_path="$data" --ep="$tok_epochs" --bs=16 --seed=0 --local_out_dir_path="$out/tokenizer"
"$py" VAR/reconstruct.py --vae_ckpt="$out/tokenizer/vae-ckpt-best.pth" --data_path="$data" --split=val \
    --out="$out/tokenizer/recon_val.npz"

step "4/5 VAR transformer (depth $depth) -> $out/var"
"$py" VAR/train.py --depth="$depth" --bs=16 --ep="$var_epochs" --tblr=8e-3 --alng=1e-3 --seed=0 --data_path="$data" \
    --vae_ckpt="$out/tokenizer/vae-ckpt-best.pth" --local_out_dir_path="$out/var"

step "5/5 samples -> $out/samples.npz, $out/samples.png"
"$py" VAR/sample.py --ckpt="$out/var/ar-ckpt-best.pth" --n=4 --out="$out/samples.npz" --seed=0 \
    --plot="$out/samples.png" --data_path="$data"

step "done in $(( $(date +%s) - t0 ))s; outputs in $out:"
echo "  data/                 dataset (train/, val/, manifest.json)"
echo "  prototype/            best.pt, metrics.json, rollout.png, rollout_metrics.json"
echo "  tokenizer/            vae-ckpt-best.pth, log.txt, recon_val.npz"
echo "  var/                  ar-ckpt-best.pth, log.txt, TensorBoard events"
echo "  samples.npz, samples.png   generated EEG in µV beside real validation windows"

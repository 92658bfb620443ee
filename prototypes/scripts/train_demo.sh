#!/usr/bin/env bash
# End-to-end prototype demo on CPU in about a minute or two: environment -> synthetic dataset -> training
# -> stage-by-stage rollout -> plot + metrics.
#   bash prototypes/scripts/train_demo.sh [OUT] [--overwrite] [--data-root DIR] [--epochs N] [-- PIPELINE FLAGS]
# OUT (default <repo>/runs/eeg_demo) receives data/ (the synthetic set, unless --data-root points to an
# existing dataset), best.pt, last.pt, metrics.json, demo_prediction.pt, rollout.png, rollout_metrics.json.
# An existing non-empty OUT is refused unless --overwrite. Flags after `--` go to
# `python -m prototypes.eeg_scale_ar_pipeline` (e.g. `-- --d-model 128 --device cuda`).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="" overwrite=0 data_root="" epochs=8 extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --overwrite) overwrite=1 ;;
    --data-root|--data_root) data_root="${2:?--data-root needs a folder}"; shift ;;
    --epochs) epochs="${2:?--epochs needs a number}"; shift ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    -*) echo "train_demo.sh: error: unknown flag $1; see --help" >&2; exit 2 ;;
    *) [ -z "$out" ] || { echo "train_demo.sh: error: two output folders given ($out, $1)" >&2; exit 2; }
       out="$1" ;;
  esac
  shift
done
out="${out:-$repo/runs/eeg_demo}"
if [ -d "$out" ] && [ -n "$(ls -A "$out")" ] && [ "$overwrite" != 1 ]; then
  echo "train_demo.sh: error: $out is not empty; pass --overwrite to replace the demo there or give another folder" >&2
  exit 2
fi
start=$(date +%s)
bash "$repo/prototypes/scripts/setup_uv_env.sh"
py="${VENV_DIR:-$repo/.venv}/bin/python"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
ow=(); [ "$overwrite" = 1 ] && ow=(--overwrite)
if [ -z "$data_root" ]; then
  data_root="$out/data"
  echo "[demo] 1/3 synthetic dataset -> $data_root"
  "$py" -m prototypes.synthetic_eeg "$data_root" --seed 0 ${ow[@]+"${ow[@]}"}
else
  echo "[demo] 1/3 using the dataset at $data_root"
fi
echo "[demo] 2/3 training $epochs epochs -> $out"
"$py" -m prototypes.eeg_scale_ar_pipeline --data-root "$data_root" --checkpoint-dir "$out" --epochs "$epochs" \
  --batch-size 16 --d-model 64 --nhead 4 --num-layers 2 --dropout 0.1 --lr 1e-3 --log-interval 20 --seed 0 \
  ${ow[@]+"${ow[@]}"} ${extra[@]+"${extra[@]}"}
echo "[demo] 3/3 plotting the rollout -> $out/rollout.png"
"$py" -m prototypes.scripts.plot_rollout "$out/demo_prediction.pt" "$out/rollout.png" --channel 0 \
  --data-root "$data_root" --json-out "$out/rollout_metrics.json" --overwrite
"$py" - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
m = json.load(open(os.path.join(out, "metrics.json")))
r = json.load(open(os.path.join(out, "rollout_metrics.json")))
print(f"[demo] val loss (add-nothing baseline {m['val_loss_add_nothing']:.4f}): "
      + " ".join(f"{e['val_loss']:.4f}" for e in m["epochs"]) + f"; best epoch {m['best_epoch']}")
for s in r["stages"][1:]:
    print(f"[demo] stage {s['stage']} {s['name']:<30} rollout SNR {s['snr_db']:5.1f} dB "
          f"(add-nothing {s['snr_db_hold']:5.1f} dB, teacher-forced {s['snr_db_teacher_forced']:5.1f} dB)")
PY
echo "[demo] done in $(( $(date +%s) - start )) s; outputs in $out"

#!/usr/bin/env bash
# The main job: real EEG in, every model of the project trained and scored, one report out.
#   recordings -> dataset -> prototype -> band tokenizer -> VAR transformer -> token NLL -> samples
#   -> zero-shot gap filling -> report.html (numbers also printed at the end). Run from anywhere.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bash scripts/main.sh [--out DIR] [--recordings PATH... | --synthetic] [--val-groups LIST]
                            [--labels RULE] [--channels SET] [--proto-epochs N] [--tok-epochs N]
                            [--var-epochs N] [--depth D] [--bs N] [--overwrite] [-h]

Sets up .venv (first run only), then trains and scores every part of the project on real EEG and writes
OUT/report/report.html. About 5-10 minutes on 2 idle CPU cores (9 CPU-minutes; on a machine shared with
other jobs, OMP_NUM_THREADS=1 is faster). Steps (each timed):
  dataset     python -m utils.data_eeg build (19 channels, 100 Hz, 2-s windows, split by subject)
  prototype   python -m prototypes.eeg_scale_ar_pipeline + plot_rollout    -> OUT/prototype/
  tokenizer   python VAR/train_vae.py + VAR/reconstruct.py                 -> OUT/tokenizer/
  VAR         python VAR/train.py                                          -> OUT/var/
  token_nll   python -m benchmarks.bench_token_nll (VAR vs token frequencies) -> OUT/token_nll/
  samples     python VAR/sample.py                                         -> OUT/samples.npz
  zero_shot   python VAR/complete.py --mode=fill_gap                       -> OUT/gap.npz
  report      python -m utils.main_report                                  -> OUT/report/report.html

Recordings (the first found is used):
  1. --recordings PATH...   files, folders or globs, any format MNE reads
  2. $EEGVAR_DATA           a folder of PhysioNet eegmat recordings (SubjectNN_1.edf, SubjectNN_2.edf)
  3. ~/eegvar_data/physionet-eegmat   the data folder; fill it with
                            python -m utils.data_eeg download-eegmat      (~180 MB, SHA-256 checked)
  4. ../shared/data/physionet-eegmat  next to the repository (development layout)

options:
  --out DIR          output folder (default: runs/main); must be empty unless --overwrite
  --synthetic        smoke test on synthetic EEG instead (checks the pipeline runs; learns nothing real)
  --val-groups LIST  validation subjects, comma-separated (default for eegmat: Subject22,Subject23,Subject24,
                     Subject25; for other recordings: 20 % of the subjects, seed 0)
  --labels RULE      --label-from rule (default for eegmat: 'regex:_1\.edf$=rest,_2\.edf$=arithmetic')
  --channels SET     channel set for real recordings: 1020-19 (default) or all
  --proto-epochs N   prototype epochs (default: 2)
  --tok-epochs N     tokenizer epochs (default: 6)
  --var-epochs N     VAR epochs (default: 3)
  --depth D          VAR depth (default: 2)
  --bs N             VAR batch size (default: 32)
  --overwrite        delete OUT first
EOF
}

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$repo/runs/main"
recordings=()
synthetic=0
val_groups=""
labels=""
channels="1020-19"
proto_epochs=2
tok_epochs=6
var_epochs=3
depth=2
bs=32
overwrite=0
die() { echo "main.sh: error: $*" >&2; exit 2; }
posint() { [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || die "$1 needs a positive integer"; }
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --out) [ $# -ge 2 ] || die "--out needs a folder"; out="$2"; shift 2 ;;
    --synthetic) synthetic=1; shift ;;
    --val-groups) [ $# -ge 2 ] || die "--val-groups needs a comma-separated list"; val_groups="$2"; shift 2 ;;
    --labels) [ $# -ge 2 ] || die "--labels needs a rule"; labels="$2"; shift 2 ;;
    --channels) [ $# -ge 2 ] || die "--channels needs a set name"; channels="$2"; shift 2 ;;
    --proto-epochs) posint "$1" "${2:-}"; proto_epochs="$2"; shift 2 ;;
    --tok-epochs) posint "$1" "${2:-}"; tok_epochs="$2"; shift 2 ;;
    --var-epochs) posint "$1" "${2:-}"; var_epochs="$2"; shift 2 ;;
    --depth) posint "$1" "${2:-}"; depth="$2"; shift 2 ;;
    --bs) posint "$1" "${2:-}"; bs="$2"; shift 2 ;;
    --overwrite) overwrite=1; shift ;;
    --recordings) shift; while [ $# -gt 0 ] && [[ "$1" != --* ]]; do recordings+=("$1"); shift; done
                  [ ${#recordings[@]} -gt 0 ] || die "--recordings needs at least one path" ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[ "$synthetic" = 1 ] && [ ${#recordings[@]} -gt 0 ] && die "--synthetic and --recordings exclude each other"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
[ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ] && [ "$overwrite" != 1 ] && \
  die "$out is not empty; pass --overwrite to replace it or --out to choose another folder"
for r in "${recordings[@]+"${recordings[@]}"}"; do  # a glob is checked by the dataset builder; a plain path must exist
  [[ "$r" == *[\*\?\[]* ]] || [ -e "$r" ] || die "--recordings: $r does not exist"
done

cd "$repo"
bash prototypes/scripts/setup_uv_env.sh
py="${VENV_DIR:-$repo/.venv}/bin/python"
export PYTHONUNBUFFERED=1

# Find the input before anything is written, so a missing input leaves no output folder behind.
source_name="your recordings"
if [ "$synthetic" = 1 ]; then
  source_name="synthetic EEG (smoke test)"
elif [ ${#recordings[@]} -eq 0 ]; then
  eegmat="$("$py" -m utils.data_eeg locate-eegmat)" || exit 2
  recordings=("$eegmat")
  source_name="PhysioNet eegmat ($eegmat)"
  [ -n "$labels" ] || labels='regex:_1\.edf$=rest,_2\.edf$=arithmetic'
  [ -n "$val_groups" ] || val_groups="Subject22,Subject23,Subject24,Subject25"
fi

if [ "$overwrite" = 1 ] && [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ]; then
  rm -rf "$out"
fi
made_out=0
[ -d "$out" ] || made_out=1
mkdir -p "$out"
# a run that stops before writing anything leaves no empty folder behind
trap '[ "$made_out" = 1 ] && [ -z "$(ls -A "$out" 2>/dev/null)" ] && rmdir "$out"' EXIT

export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc 2>/dev/null || echo 2)}"
t0=$(date +%s)
timings=""
last=$t0
step_name=""
step() {  # close the previous step's timer, open the next
  local now; now=$(date +%s)
  [ -n "$step_name" ] && timings="$timings${timings:+, }\"$step_name\": $((now - last))"
  printf '{%s}\n' "$timings" > "$out/timings.json"
  last=$now; step_name="$1"; shift
  [ -n "$step_name" ] && { echo; echo "=== [$((now - t0))s] $step_name: $*"; }
  return 0
}
cat > "$out/settings.json" <<EOF
{"source": "$( [ "$synthetic" = 1 ] && echo synthetic || echo recordings )", "synthetic": $( [ "$synthetic" = 1 ] && echo true || echo false ),
 "val_groups": "${val_groups:-20 % of subjects}", "proto_epochs": $proto_epochs, "tok_epochs": $tok_epochs,
 "var_epochs": $var_epochs, "var_depth": $depth, "var_bs": $bs, "threads": $OMP_NUM_THREADS}
EOF

data="$out/data"
step dataset "$source_name -> $data"
if [ "$synthetic" = 1 ]; then
  echo "*** SMOKE TEST on synthetic EEG: checks that every step runs; the numbers say nothing about real EEG ***"
  "$py" -m prototypes.synthetic_eeg "$data" --channels 8 --sfreq 100 --window-sec 2 --n-windows 160 \
      --windows-per-recording 8 --seed 0
else
  build=("$py" -m utils.data_eeg build --inputs "${recordings[@]}" --out "$data" --sfreq 100 --window-sec 2
         --channels "$channels" --split-by subject --seed 0 --progress off)
  [ -n "$labels" ] && build+=(--label-from "$labels")
  [ -n "$val_groups" ] && build+=(--val-groups "$val_groups")
  "${build[@]}"
fi
"$py" -m utils.data_eeg info "$data"

step prototype "next-stage Transformer, $proto_epochs epoch(s) -> $out/prototype"
"$py" -m prototypes.eeg_scale_ar_pipeline --data-root "$data" --checkpoint-dir "$out/prototype" \
    --epochs "$proto_epochs" --limit-train-samples 800 --d-model 64 --seed 0 --device cpu --log-interval 100
"$py" -m prototypes.scripts.plot_rollout "$out/prototype/demo_prediction.pt" "$out/prototype/rollout.png" \
    --channel 0 --data-root "$data" --split val --sample-idx 0 --json-out "$out/prototype/rollout_metrics.json"

step tokenizer "band tokenizer, $tok_epochs epoch(s) -> $out/tokenizer"
"$py" VAR/train_vae.py --data_path="$data" --ep="$tok_epochs" --seed=0 --local_out_dir_path="$out/tokenizer"
"$py" VAR/reconstruct.py --vae_ckpt="$out/tokenizer/vae-ckpt-best.pth" --data_path="$data" --split=val \
    --out="$out/tokenizer/recon_val.npz" > "$out/tokenizer/recon_val.json"

step var "VAR transformer, depth $depth, $var_epochs epoch(s) -> $out/var"
"$py" VAR/train.py --depth="$depth" --bs="$bs" --ep="$var_epochs" --seed=0 --data_path="$data" \
    --vae_ckpt="$out/tokenizer/vae-ckpt-best.pth" --local_out_dir_path="$out/var"

step token_nll "VAR's validation NLL against token frequencies -> $out/token_nll"
"$py" -m benchmarks.bench_token_nll --ckpt="$out/var/ar-ckpt-best.pth" --data-root="$data" \
    --results-dir="$out/token_nll" --limit=600

step samples "generated windows -> $out/samples.npz"
"$py" VAR/sample.py --ckpt="$out/var" --n=240 --out="$out/samples.npz" --seed=0  # 5 sets of 48 a class

step zero_shot "gap 0.8-1.2 s filled in 32 validation windows -> $out/gap.npz"
"$py" VAR/complete.py --mode=fill_gap --gap=0.8:1.2 --ckpt="$out/var/ar-ckpt-best.pth" --data_path="$data" \
    --split=val --n=32 --n_samples=4 --out="$out/gap.npz"

step report "scores and figures -> $out/report/report.html"
"$py" -m utils.main_report "$out"
step ""
echo "time per step (s): $(cat "$out/timings.json")"
[ "$synthetic" = 1 ] && echo "*** SMOKE TEST on synthetic EEG: run without --synthetic for the real report ***"
echo "total: $(( $(date +%s) - t0 ))s; open $out/report/report.html"

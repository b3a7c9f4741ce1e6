#!/usr/bin/env bash
# The GPU run kit: one command per device call, run from the repo root on the lent machine.
#
#   here:    python bench/device_kit.py pack DATA --split RUN/split.json   # -> .device/call-1 .. call-N
#   device:  run(command="bash bench/device_run.sh --minutes 6", carry=[".device/call-K"])   for K = 1..N, back to back
#   dry run: bash bench/device_run.sh --dry-run      # the whole path on this CPU machine (tests/test_device_kit.py)
#
# Each call moves what it carried into the machine's stage folder; the call that completes the set installs g2g
# over the machine's own torch (no pip, no download: the source tree is linked into a site folder, the libraries the
# image lacks were carried), trains the default recipe (appearance, --preset appearance --size 128, AMP on CUDA) for
# --minutes, exports the fp16 bundle, measures decode throughput, and leaves under $OUT (at most 8 files, 16 MiB each):
#   model.tar (the bundle), run.tar (metrics.jsonl, losses.png, the last sample sheet, config.json, split.json),
#   ema.pt (the EMA generator, for g2g train --init-from in a later call or here), bench.json, train.log.
# A later call with --resume carries ema.pt back (put it in .device/resume/) and fine-tunes from it.
set -euo pipefail
MINUTES=6; BATCH=64; SIZE=128; DRY=0; RESUME=""
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) MINUTES=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --resume) RESUME=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    *) echo "device_run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
PY=${PYTHON:-python3}
export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1

if [ "$DRY" = 1 ]; then  # this machine: a temporary OUT and stage, the tiny preset, a few steps, g2g as installed
  OUT=${OUT:-$(mktemp -d)}; STAGE=${G2G_DEVICE_STAGE:-$(mktemp -d)}
  CARRY=${G2G_DEVICE_CARRY:?--dry-run needs G2G_DEVICE_CARRY: a folder made by device_kit.py pack}
  PRESET=appearance-tiny; SIZE=32; BATCH=2; STEPS=3; LIMIT=120; WORKERS=0
else
  OUT=${OUT:?OUT is set by the device tool}; STAGE=/tmp/g2g-device; CARRY=.device
  PRESET=appearance; STEPS=10000000; LIMIT=$((MINUTES * 60)); WORKERS=8
fi
mkdir -p "$STAGE" "$OUT"
log() { echo "[device_run $(date +%H:%M:%S)] $*"; }

log "assembling what this call carried ($CARRY)"
if ! "$PY" bench/device_kit.py assemble "$CARRY" "$STAGE"; then
  log "not all pieces are here yet: carry the next call-K folder in the next call"
  exit 0
fi

if [ "$DRY" = 0 ]; then  # g2g's packages linked into a site folder (the tree's layout, as pyproject maps it)
  site="$STAGE/site"; rm -rf "$site"; mkdir -p "$site/g2g"
  for f in g2gcli/*; do ln -s "$repo/$f" "$site/g2g/$(basename "$f")"; done
  ln -s "$repo/train" "$site/g2g/train"; ln -s "$repo/export" "$site/g2g/export"
  export PYTHONPATH="$site:$STAGE/libs${PYTHONPATH:+:$PYTHONPATH}"
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
fi
export G2G_WEIGHTS_DIR="$STAGE/weights"
g2g() { "$PY" -c "from g2g.cli import main; main()" "$@"; }
"$PY" -c "import torch, g2g; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

run="$STAGE/run"
init=()
if [ -n "$RESUME" ]; then init=(--init-from "$RESUME"); fi
log "training $PRESET at $SIZE px, batch $BATCH, for $LIMIT s"
set +e
timeout -s INT "$LIMIT" "$PY" -c "from g2g.cli import main; main()" train "$STAGE/data" -o "$run" \
  --preset "$PRESET" --size "$SIZE" --batch-size "$BATCH" --steps "$STEPS" --optimizer adam --lr 2e-4 \
  --alpha 1 --gamma 1 --delta 1 --lambda-adv 0 --self-recon 1 --val-people 0.1 \
  --checkpoint-every 200 --sample-every 200 --log-every 20 --workers "$WORKERS" --json "${init[@]}" \
  > "$STAGE/train.json" 2> "$OUT/train.log"
rc=$?
set -e
tail -3 "$OUT/train.log" || true
case $rc in 0|124|130) ;; *) log "training failed (exit $rc); see train.log"; exit "$rc" ;; esac

log "exporting the fp16 bundle"
g2g export "$run" -o "$STAGE/model" --fp16 --check-data "$STAGE/data" > "$STAGE/export.log" 2>&1 || {
  cat "$STAGE/export.log"; exit 3; }
big=$(find "$STAGE/model" -type f -size +15M)
if [ -n "$big" ]; then log "bundle files over 15 MiB: $big"; exit 3; fi
tar -C "$STAGE/model" -cf "$OUT/model.tar" .
"$PY" - "$run" "$OUT/ema.pt" <<'EOF'
import sys
from pathlib import Path

import torch

from g2g.train.checkpoint import latest_checkpoint

state = torch.load(latest_checkpoint(Path(sys.argv[1])), map_location="cpu", weights_only=True)
slim = {k: state[k] for k in ("config", "step", "generator_ema") if k in state}
slim["generator"] = state["generator_ema"]  # what --init-from reads, as a checkpoint of its own
torch.save(slim, sys.argv[2])
EOF
last=$(ls "$run/samples" | tail -1)
tar -C "$run" -cf "$OUT/run.tar" metrics.jsonl losses.png config.json split.json "samples/$last"
log "measuring decode throughput"
"$PY" bench/device_kit.py bench "$STAGE/model" "$OUT/bench.json" > /dev/null || log "bench failed (see above)"
cp "$STAGE/train.json" "$OUT/train.json"
ls -la "$OUT"
log "done"

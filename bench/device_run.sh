#!/usr/bin/env bash
# The GPU run kit: ONE command on a GPU machine, from the repo root, trains for --minutes and leaves a model and GPU
# figures under $OUT.
#
#   here:    python bench/device_kit.py pack DATA --split bench/default_model_split.json   # -> .device/carry (checked)
#   there:   bash bench/device_run.sh --minutes 7   # in a copy of the working tree with .device/carry; OUT=results
#   again:   the same command on the same machine goes on from its checkpoint exactly (--resume); on a fresh
#            machine, pack with --resume MODEL (the model.tar that came back, unpacked) to fine-tune from it
#   dry run: bash bench/device_run.sh --dry-run   # the same path on this CPU, tiny preset (tests/test_device_kit.py)
#   rehearsal: bash bench/device_run.sh --rehearse --minutes 2 --batch 4   # the real kit, preset and size on this CPU
#   refiner: bash bench/device_run.sh --minutes 8 --preset refiner-gpu   # the appearance networks over the default
#            method's composition, with the GAN term (--dry-run --preset refiner-gpu: the tiny networks over it)
#   variants: bash bench/device_run.sh --minutes 8 --preset refiner-gpu -- --residual-sigma 2 --discriminator projected
#            (everything after -- goes to g2g train as it is)
#
# On the GPU machine: unpack the kit (crops, packed loss weights, onnxconverter-common), install g2g over the machine's
# own torch (the source tree linked into a site folder: no pip, no download), train the default recipe at GPU size
# (--preset appearance-gpu: 128 px, AMP; --size and --batch override it) for --minutes, export the fp16 bundle (every file under
# 15 MiB), measure decode throughput, and leave under $OUT (8 files, each under 16 MiB):
#   model.tar (the bundle: g2g mix --model, g2g eval, --init-from), ema.pt (the EMA generator in float16: comes back
#   even when the export fails, for g2g export or --init-from here), run.tar (metrics.jsonl, losses.png, the last
#   sample sheet, config.json, split.json), train.json (steps, images/s), bench.json, train.log, export.log.
# Every step's timing is in the log lines, so the time each part takes is known before the next run.
set -euo pipefail
MINUTES=7; BATCH=64; SIZE=128; PRESET=appearance-gpu; DRY=0; REHEARSE=0; WORKERS=""; STEPS=""; EXTRA=(); TRAIN_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) MINUTES=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --preset) PRESET=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --rehearse) REHEARSE=1; shift ;;
    --) shift; TRAIN_ARGS=("$@"); break ;;
    *) echo "device_run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
PY=${PYTHON:-python3}
export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
log() { echo "[device_run $(date +%H:%M:%S)] $*"; }
cores=$(OMP_NUM_THREADS= OMP_THREAD_LIMIT= nproc)  # nproc alone answers OMP_NUM_THREADS

if [ "$DRY" = 1 ]; then  # this machine: a temporary OUT and stage, the tiny preset, a few steps
  OUT=${OUT:-$(mktemp -d)}; STAGE=${G2G_DEVICE_STAGE:-$(mktemp -d)}
  CARRY=${G2G_DEVICE_CARRY:?--dry-run needs G2G_DEVICE_CARRY: a folder made by device_kit.py pack}
  case "$PRESET" in refiner*) EXTRA=(--base-fixes default) ;; esac  # the refiner's base, on the tiny networks
  PRESET=appearance-tiny; SIZE=32; BATCH=2; STEPS=${STEPS:-3}; WORKERS=${WORKERS:-1}
elif [ "$REHEARSE" = 1 ]; then  # this machine: the real kit and recipe, a temporary OUT and stage
  OUT=${OUT:-$(mktemp -d)}; STAGE=${G2G_DEVICE_STAGE:-$(mktemp -d)}; CARRY=${G2G_DEVICE_CARRY:-.device/carry}
  STEPS=${STEPS:-10000000}; WORKERS=${WORKERS:-2}
else
  OUT=${OUT:?set OUT to the folder the results go to}; STAGE=/tmp/g2g-device; CARRY=.device/carry
  STEPS=${STEPS:-10000000}; WORKERS=${WORKERS:-$(( cores > 4 ? cores - 2 : 2 ))}
fi
mkdir -p "$STAGE" "$OUT"

# g2g's packages linked into a site folder in the layout pyproject maps (g2gcli -> g2g, train -> g2g.train, ...),
# ahead of the kit's libraries, before anything imports g2g (the kit's unpack does); the dry run also hides every
# package the GPU machine lacks, so it fails here where that machine would
site="$STAGE/site"; rm -rf "$site"; mkdir -p "$site/g2g"
for f in g2gcli/*; do ln -s "$repo/$f" "$site/g2g/$(basename "$f")"; done
ln -s "$repo/train" "$site/g2g/train"; ln -s "$repo/export" "$site/g2g/export"
if [ "$DRY" = 1 ] || [ "$REHEARSE" = 1 ]; then
  for m in dlib facenet_pytorch face_recognition_models stlpips_pytorch; do
    echo "raise ImportError('$m is not on the GPU machine: the kit must not need it')" > "$site/$m.py"
  done
fi
export PYTHONPATH="$site:$STAGE/libs${PYTHONPATH:+:$PYTHONPATH}"

log "unpacking the kit ($CARRY)"
if ! cmp -s "$CARRY/plan.json" "$STAGE/plan.json"; then  # a second run on the same machine has it already
  rm -rf "$STAGE/data" "$STAGE/weights" "$STAGE/libs" "$STAGE/resume"
  "$PY" bench/device_kit.py unpack "$CARRY" "$STAGE"
  cp "$CARRY/plan.json" "$STAGE/plan.json"
fi
# DataLoader workers hand batches over in /dev/shm: two in flight per worker, 3.9 MB a pair at 128 px (float32,
# 59 channels); a small /dev/shm (a container's 64 MB) kills them with a bus error, so fewer workers then
shm_kb=$(df -Pk /dev/shm 2>/dev/null | awk 'NR==2 {print $4}'); shm_kb=${shm_kb:-0}
fit=$(( shm_kb / (2 * BATCH * SIZE * SIZE * 59 * 4 / 1024 + 1) ))
if [ "$shm_kb" -gt 0 ] && [ "$fit" -lt "$WORKERS" ]; then
  log "/dev/shm has $((shm_kb / 1024)) MiB free: $fit workers instead of $WORKERS"; WORKERS=$(( fit > 0 ? fit : 0 ))
fi
log "$cores cores, $(free -g 2>/dev/null | awk '/Mem:/ {print $2}') GiB memory, /dev/shm $((shm_kb / 1024)) MiB free"
export G2G_WEIGHTS_DIR="$STAGE/weights"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
"$PY" -c "import sys, torch, g2g; assert g2g.__file__.startswith('$site'), g2g.__file__; \
print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'g2g from', g2g.__file__)"
g2g() { "$PY" -c "from g2g.cli import main; main()" "$@"; }

run="$STAGE/run"
from=()
if [ -f "$run/checkpoints/last.pt" ]; then from=(--resume)  # same machine, second run: exactly where it stopped
elif [ -d "$STAGE/resume" ]; then from=(--init-from "$STAGE/resume"); fi  # fresh machine: fine-tune from a bundle
log "training --preset $PRESET at $SIZE px, batch $BATCH, $WORKERS workers, for $MINUTES min ${from[*]}"
set +e
g2g train "$STAGE/data" -o "$run" --preset "$PRESET" --size "$SIZE" --batch-size "$BATCH" \
  --steps "$STEPS" --max-minutes "$MINUTES" --val-people 4 \
  --checkpoint-every 500 --sample-every 500 --log-every 50 --workers "$WORKERS" --json "${from[@]}" "${EXTRA[@]}" ${TRAIN_ARGS[@]+"${TRAIN_ARGS[@]}"} \
  > "$OUT/train.json" 2> "$OUT/train.log"
rc=$?
set -e
tail -4 "$OUT/train.log" || true
if [ ! -f "$run/checkpoints/last.pt" ]; then log "training failed (exit $rc) before a checkpoint; see train.log"; exit 3; fi
[ "$rc" = 0 ] || log "training stopped with exit $rc; bringing back what its last checkpoint holds"
status=$rc

# whatever happens next, the training comes back: the EMA generator in float16 (12 MB at the appearance-gpu
# preset), which g2g export and g2g train --init-from read here
"$PY" bench/device_kit.py slim "$run" "$OUT/ema.pt"
files=()
for f in metrics.jsonl losses.png config.json split.json "samples/$(ls "$run/samples" 2>/dev/null | tail -1)"; do
  [ -f "$run/$f" ] && files+=("$f")
done
tar -C "$run" -cf "$OUT/run.tar" "${files[@]}"

log "exporting the fp16 bundle"
rm -rf "$STAGE/model"
if g2g export "$run" -o "$STAGE/model" --fp16 --check-data "$STAGE/data" > "$OUT/export.log" 2>&1; then
  big=$(find "$STAGE/model" -type f -size +15M)
  if [ -n "$big" ]; then log "bundle files over 15 MiB: $big (ema.pt came back: export it here)"; status=3
  else
    tar -C "$STAGE/model" -cf "$OUT/model.tar" .
    log "measuring decode throughput"
    "$PY" bench/device_kit.py bench "$STAGE/model" "$OUT/bench.json" > /dev/null || log "bench failed (see above)"
  fi
else
  tail -20 "$OUT/export.log"; log "export failed (ema.pt came back: g2g export ema.pt here)"; status=3
fi
ls -la "$OUT"
log "done (exit $status)"
exit "$status"

#!/usr/bin/env bash
# Reproduce the default model's held-out numbers (README, model card):
# id-sim against the real same/different-person distributions, ID retrieval top-1,
# landmark error and reconstruction PSNR/SSIM/LPIPS on identities unseen in training.
#
#   bash bench/quality.sh DATA SPLIT [MODEL] [WORK]
#     DATA   g2g prepare output the model was trained on (e.g. of ../shared/faces/celeba-wild)
#     SPLIT  the training run's split.json (its "val" identities are held out)
#     MODEL  exported model folder (default: the model shipped inside g2g)
#     WORK   scratch folder (default: a new temporary folder)
set -euo pipefail
DATA=${1:?DATA}; SPLIT=${2:?SPLIT}
MODEL=${3:-$(python -c 'from g2g.bundle import default_model_dir; print(default_model_dir())')}
WORK=${4:-$(mktemp -d)}
here=$(cd "$(dirname "$0")" && pwd)

python "$here/heldout_sets.py" "$DATA" "$SPLIT" "$WORK/heldout" --k 3
g2g mix "$WORK/heldout/poses" "$WORK/heldout/ids" -o "$WORK/mix" --model "$MODEL" --aligned --grid
g2g eval "$WORK/mix" --metric id-sim,id-retrieval,pose --json "$WORK/mix-eval.json"
g2g eval "$MODEL" "$DATA" --metric recon --split "$SPLIT" --out-dir "$WORK/recon-eval" --json "$WORK/recon-eval.json"
echo "reports: $WORK/mix-eval.json $WORK/recon-eval.json; grid: $WORK/mix/grid.jpg"

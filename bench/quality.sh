#!/usr/bin/env bash
# Held-out numbers of a model or a non-learned method (docs/ablation.md, MODEL_CARD.md):
# identity retrieval (top-1/top-5, pose leak) against chance, expression error, landmark error,
# and for a model the reconstruction PSNR/SSIM/LPIPS, all on people unseen in training.
#
#   bash bench/quality.sh DATA SPLIT [MODEL|paste|warp-paste|expression-paste] [WORK] [SIZE]
#     DATA   g2g prepare output the model was trained on
#     SPLIT  the training run's split.json (its "val" people are held out)
#     MODEL  exported model folder (default: the model shipped inside g2g), or a method name
#     WORK   scratch folder (default: a new temporary folder)
#     SIZE   crop side for paste / warp-paste (default 64, the shipped model's size)
set -euo pipefail
DATA=${1:?DATA}; SPLIT=${2:?SPLIT}
MODEL=${3:-$(python -c 'from g2g.bundle import default_model_dir; print(default_model_dir())')}
WORK=${4:-$(mktemp -d)}
SIZE=${5:-64}
here=$(cd "$(dirname "$0")" && pwd)

[ -d "$WORK/heldout" ] || python "$here/heldout_sets.py" "$DATA" "$SPLIT" "$WORK/heldout" --k 3 --max-ids 60
case "$MODEL" in
  paste|warp-paste|expression-paste) how=(--method "$MODEL" --size "$SIZE"); name=$MODEL ;;
  *) how=(--model "$MODEL"); name=$(basename "$MODEL") ;;
esac
g2g mix "$WORK/heldout/poses" "$WORK/heldout/ids" -o "$WORK/mix-$name" "${how[@]}" --aligned --grid
g2g eval "$WORK/mix-$name" --metric id-sim,id-retrieval,pose,expression --json > "$WORK/mix-$name.json"
if [ -d "$MODEL" ]; then
  g2g eval "$MODEL" "$DATA" --metric recon --split "$SPLIT" --out-dir "$WORK/recon-$name" --json > "$WORK/recon-$name.json"
fi
echo "reports: $WORK/mix-$name.json${MODEL:+ }$( [ -d "$MODEL" ] && echo "$WORK/recon-$name.json"); grid: $WORK/mix-$name/grid.jpg"

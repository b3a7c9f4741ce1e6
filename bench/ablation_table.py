"""One markdown table row per held-out report of bench/quality.sh (docs/ablation.md).

    python bench/ablation_table.py NAME=WORK/mix-X.json[,WORK/recon-X.json] ...
"""

from __future__ import annotations

import json
import sys


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _f(x: float | None, fmt: str = "{:.3f}") -> str:
    return "–" if x is None else fmt.format(x)


def row(name: str, mix_json: str, recon_json: str | None) -> str:
    mix = json.load(open(mix_json))["results"]
    r = mix["id-retrieval"]["dlib"]
    e = mix["expression"]
    p = mix["pose"]
    cells = [name, f"{_pct(r['top1_cross'])} / {_pct(r['top5_cross'])}", _pct(r["chance_top1"]), _pct(r["pose_leak"]),
             _f(e["error"]["mean"]), _f(p["landmark_error"]["mean"])]
    if recon_json:
        rc = json.load(open(recon_json))["results"]["recon"]
        cells += [_f(rc["self"]["psnr"]["mean"], "{:.1f} dB"), _f(rc["self"]["lpips"]["mean"])]
    else:
        cells += ["–", "–"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    print("| recipe | top-1 / top-5 (cross pairs) | chance | pose leak | expression error / IOD | "
          "landmark error / IOD | self-recon PSNR | self-recon LPIPS |")
    print("|---|---|---|---|---|---|---|---|")
    for arg in sys.argv[1:]:
        name, files = arg.split("=", 1)
        parts = files.split(",")
        print(row(name, parts[0], parts[1] if len(parts) > 1 else None))


if __name__ == "__main__":
    main()

"""``recon``: how well a model rebuilds held-out faces, on ONNX Runtime.

For each held-out crop a (b: a crop of another identity): the self
reconstruction G(E_A(a), E_B(a)) and the cycle reconstruction
G(E_A(G(E_A(a),E_B(b))), E_B(G(E_A(b),E_B(a)))), scored against a by PSNR, SSIM
and LPIPS (the trainer's ST-LPIPS); a vs b is the unrelated-image floor.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from g2g.eval import metrics as M
from g2g.faces.preprocess import DEFAULT_ZOOM, check_zoom, resize_to_model
from g2g.config import EvalConfig
from g2g.eval.runs import read_crop
from g2g.eval.plots import recon_sheet, write_csv
from g2g.eval.report import EvalError, EvalReport

KINDS = ("self", "cycle", "floor")  # reconstruction vs a, and the unrelated face b vs a
QUALITY = ("psnr", "ssim", "lpips")


def _lpips(device: str, size: int) -> tuple[Callable[[np.ndarray, np.ndarray], np.ndarray] | None, str]:
    """The trainer's ST-LPIPS on ONNX Runtime as ``fn(a_uint8, b_uint8) -> (N,)`` for ``size`` px crops, exported
    once into the user cache where torch is installed; (None, why) where it cannot be had."""
    from g2g.eval.lpips import LpipsUnavailable, cached_lpips_onnx, lpips_distance

    try:
        fn, where = lpips_distance(cached_lpips_onnx(size), device)
    except LpipsUnavailable as e:
        return None, f"LPIPS unavailable: {e}"
    except Exception as e:  # a file ONNX Runtime cannot open
        return None, f"LPIPS unavailable: {type(e).__name__}: {e}"
    return fn, f"ST-LPIPS VGG16 (the trainer's perceptual network) on ONNX Runtime ({where}); 0 = identical"


def _held_out(data: Path, split: str | None) -> tuple[list[dict[str, Any]], str]:
    """DATA's ok manifest lines of the held-out identities (the split's "val", else all), and a note saying which."""
    from g2g.prepare import read_manifest

    recs = [r for r in read_manifest(data) if r.get("output")]
    if not recs:
        raise EvalError(f"{data} has no aligned crops (no ok lines in manifest.jsonl); run g2g prepare first")
    if not split:
        return recs, f"all {len({r['identity'] for r in recs})} identities of DATA (no split given)"
    p = Path(split)
    p = p / "split.json" if p.is_dir() else p
    try:
        val = set(json.loads(p.read_text())["val"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EvalError(f"cannot read the validation identities from {p}: {type(e).__name__}: {e}") from None
    held = [r for r in recs if r["identity"] in val]
    if not held:
        raise EvalError(f"none of the {len(val)} validation identities of {p} has crops in {data}")
    return held, f"{len({r['identity'] for r in held})} validation identities of {p}"


def _check_geometry(facts: dict[str, Any], rec: dict[str, Any]) -> int:
    """The model's crop size, after checking DATA was prepared at the model's zoom.

    Crops of another size are resized to the model's (as ``g2g mix --aligned`` and
    ``g2g train --size`` do); a different zoom frames the face differently and is refused.
    """
    align, model = facts.get("align") or {}, facts.get("model") or {}
    size = int(align.get("size") or model.get("image_size") or 0)
    zoom = float(align.get("zoom") or model.get("zoom") or DEFAULT_ZOOM)
    check_zoom(rec.get("zoom"), zoom, "DATA crops", EvalError)
    return size


def _open_mixer(model_dir: Path, device: str) -> Any:
    """The model's mixer (g2g.methods), which knows how its recipe rebuilds a face (``reconstruct``)."""
    from g2g.methods import open_mixer

    try:
        return open_mixer("model", model_dir, device=device)
    except Exception as e:
        raise EvalError(f"cannot open the model bundle {model_dir}: {e}") from None


def _read_crops(data: Path, recs: list[dict[str, Any]], size: int) -> tuple[list[np.ndarray], list[str], list[str]]:
    """(crops resized to the model's side, identities, crop paths) of the readable records."""
    imgs, names, rels = [], [], []
    for r in recs:
        a = read_crop(Path(data) / r["output"])
        if a is not None:
            imgs.append(resize_to_model(a, size)), names.append(r["identity"]), rels.append(r["output"])
    if not imgs:
        raise EvalError(f"no readable {size} px crops among the held-out images of {data}")
    return imgs, names, rels


def _partners(names: list[str], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bool]:
    """(a crop of another person, another photo of the same person (itself where there is none), whether a cycle
    can be measured at all) for each crop."""
    ids, n = np.array(names), len(names)
    cycle_ok = len(set(names)) >= 2
    partner = np.array([rng.choice(np.flatnonzero(ids != ids[i])) if cycle_ok else i for i in range(n)])
    sibling = np.array([rng.choice(np.flatnonzero((ids == ids[i]) & (np.arange(n) != i)))
                        if ((ids == ids[i]).sum() > 1) else i for i in range(n)])
    return partner, sibling, cycle_ok


def recon_metrics(model_dir: Path, facts: dict[str, Any], data: Path, cfg: EvalConfig, report: EvalReport,
                  out_dir: Path) -> dict[str, Any]:
    """PSNR/SSIM/LPIPS of self and cycle reconstructions of held-out crops; timings, files and notes go to ``report``."""
    mixer = _open_mixer(model_dir, cfg.device)
    recs, held_note = _held_out(data, cfg.split)
    size = _check_geometry(facts, recs[0])
    rng = np.random.default_rng(cfg.seed)
    if len(recs) > cfg.max_images:
        recs = [recs[i] for i in sorted(rng.choice(len(recs), cfg.max_images, replace=False))]
    imgs, names, rels = _read_crops(data, recs, size)
    n = len(imgs)
    partner, sibling, cycle_ok = _partners(names, rng)
    keep = sibling != np.arange(n) if mixer.needs_sibling else np.ones(n, bool)
    if not keep.all():
        report.notes.append(f"recon: {int((~keep).sum())} held-out crops without a second photo of their person "
                            "left out (an appearance model never rebuilds a photo from itself)")
    lpips_fn, lpips_note = _lpips(cfg.device, size)
    per, sheet_rows = _score_batches(mixer, imgs, names, rels, partner, sibling, keep, cycle_ok, lpips_fn, cfg, report)
    write_csv(out_dir / "recon_per_image.csv", per)
    report.files["recon_csv"] = str(out_dir / "recon_per_image.csv")
    if sheet_rows:
        own = mixer.self_label  # labels fit a 128 px cell
        recon_sheet(out_dir / "recon_examples.png", sheet_rows,
                    ["a", "b", own, "mix G(a, b)", "cycle a'"] if cycle_ok else ["a", own])
        report.files["recon_examples"] = str(out_dir / "recon_examples.png")
    res: dict[str, Any] = {
        "model_dir": str(model_dir), "held_out": held_note, "n_images": len(per), "lpips": lpips_note,
        "psnr_capped": sum(r.get(f"{k}_psnr") == M.PSNR_CAP_DB for r in per for k in ("self", "cycle")),
    }
    for kind in KINDS:
        res[kind] = ({m: M.stats([r[f"{kind}_{m}"] for r in per if f"{kind}_{m}" in r]) for m in QUALITY}
                     if (kind == "self" or cycle_ok) else None)
    if not cycle_ok:
        report.notes.append("recon: only one held-out identity, so no cycle reconstruction (it needs a second person)")
    if lpips_fn is None:
        report.warnings.append(lpips_note)
    return res


def _score_batches(mixer: Any, imgs: list[np.ndarray], names: list[str], rels: list[str], partner: np.ndarray,
                   sibling: np.ndarray, keep: np.ndarray, cycle_ok: bool, lpips_fn: Callable | None, cfg: EvalConfig,
                   report: EvalReport) -> tuple[list[dict[str, Any]], list[list[np.ndarray]]]:
    """Per-image rows and the example sheet's rows, in batches of ``cfg.batch_size``."""
    per: list[dict[str, Any]] = []
    sheet_rows: list[list[np.ndarray]] = []
    t_gen = t_lpips = 0.0
    for s in range(0, len(imgs), cfg.batch_size):
        t1 = time.perf_counter()
        idx = np.arange(s, min(len(imgs), s + cfg.batch_size))
        idx = idx[keep[idx]]
        if not len(idx):
            continue
        a_u8 = np.stack([imgs[i] for i in idx])
        b_u8 = np.stack([imgs[j] for j in partner[idx]])
        self_u8, mix_u8, cyc_u8 = mixer.reconstruct(a_u8, np.stack([imgs[j] for j in sibling[idx]]), b_u8)
        t2 = time.perf_counter()
        got = {"self": self_u8, "cycle": cyc_u8, "floor": b_u8}
        lp = {kind: lpips_fn(img, a_u8) for kind, img in got.items()} if lpips_fn is not None else {}
        t_gen, t_lpips = t_gen + t2 - t1, t_lpips + time.perf_counter() - t2
        for k, i in enumerate(idx):
            row = {"image": rels[i], "identity": names[i], "partner": rels[partner[i]]}
            for kind in KINDS if cycle_ok else ("self",):
                row[f"{kind}_psnr"] = M.psnr(got[kind][k], a_u8[k])
                row[f"{kind}_ssim"] = M.ssim(got[kind][k], a_u8[k])
                if lp:
                    row[f"{kind}_lpips"] = float(lp[kind][k])
            per.append(row)
            if len(sheet_rows) < 2 * cfg.examples:  # only what was measured: no cycle without a second person
                sheet_rows.append([a_u8[k], b_u8[k], self_u8[k], mix_u8[k], cyc_u8[k]] if cycle_ok
                                  else [a_u8[k], self_u8[k]])
    report.timings.update({"recon:generator": t_gen, "recon:lpips": t_lpips})
    return per, sheet_rows

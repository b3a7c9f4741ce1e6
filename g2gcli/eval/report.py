"""What ``g2g eval`` hands back: the report (JSON-ready) and its rich table, each number beside its reference."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from g2g.eval.metrics import PSNR_CAP_DB
from g2g.errors import G2GError


class EvalError(G2GError):
    """A problem with the whole evaluation (bad target, missing weights): a one-line user error."""


@dataclass
class EvalReport:
    target: str
    metrics: list[str]
    out_dir: str
    networks: list[dict[str, Any]] = field(default_factory=list)  # name, distance, threshold, trained_against
    counts: dict[str, Any] = field(default_factory=dict)  # planned, ok, evaluated, skipped {reason: n}
    results: dict[str, Any] = field(default_factory=dict)  # metric -> numbers (per network for id metrics)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # what -> path written
    elapsed_s: float = 0.0
    images: int = 0  # outputs (mix) plus held-out images (recon) evaluated: throughput = images / elapsed_s
    timings: dict[str, float] = field(default_factory=dict)  # s per stage: identity, pose, recon
    device: str = ""

    @property
    def images_per_s(self) -> float:
        return self.images / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_s": self.images_per_s, "psnr_cap_db": PSNR_CAP_DB}

    def table(self):
        """A rich table of the headline numbers, each next to the reference it should be read against."""
        from rich.table import Table

        t = Table(title=f"g2g eval {self.target}", title_justify="left")
        for col, just in (("metric", "left"), ("quantity", "left"), ("value", "right"), ("read against", "left")):
            t.add_column(col, justify=just)  # type: ignore[arg-type]
        for row in _table_rows(self):
            t.add_row(*row)
        return t


def _f(v: Any, fmt: str = "{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _counts(c: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    skipped = f" ({', '.join(f'{k}: {v}' for k, v in c['skipped'].items())})" if c["skipped"] else ""
    return [("outputs", "evaluated / planned", f"{c['ok']} / {c['planned']}", f"{c['n_skipped']} skipped{skipped}")]


def _means(metric: str, text: str) -> tuple[str, str, str, str]:
    """The row that says in plain words what a metric's numbers mean."""
    return (metric, "[dim]what it means[/dim]", "", f"[dim]{text}[/dim]")


def _id_sim(name: str, s: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    ref, unit, m = s["reference"], ("dist" if s["distance"] == "euclidean" else "cos dist"), f"id-sim [{name}]"
    return [
        _means(m, "how far each output's identity embedding is from its identity's photos; real photos of one "
                  "person sit at 'same', of two people at 'different'"),
        (m, f"{unit} to identity (mean)", _f(s["dist_to_identity"]["mean"]),
         f"real same {_f(ref['same_person']['mean'])} / different {_f(ref['different_person']['mean'])}"),
        (m, f"{unit} to pose source", _f(s["dist_to_pose"]["mean"]), "baseline to beat (higher is better)"),
        (m, "cosine to identity", _f(s["cos_to_identity"]["mean"]),
         f"real same {_f(ref['same_person_cos']['mean'])} / different {_f(ref['different_person_cos']['mean'])}"),
        (m, f"verified (< {s['threshold']:g})", _pct(s["verified_at_threshold"]),
         f"real same {_pct(ref['same_verified_at_threshold'])} / different {_pct(ref['different_verified_at_threshold'])}"),
        (m, "identity level", _f(s["identity_level"], "{:.2f}"), "0 = different-person, 1 = same-person"),
        (m, "nearest identity right", _pct(s["nearest_identity_accuracy"]), f"of {s['n_identities']} identities"),
        (m, "closer to identity than pose", _pct(s["closer_to_identity_than_pose"]), ""),
    ]


def _id_retrieval(name: str, s: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    m = f"id-retrieval [{name}]"
    return [
        _means(m, "top-1: share of outputs whose nearest identity of the run is the right one"),
        (m, "top-1", _pct(s["top1"]), f"chance {_pct(s['chance_top1'])}; pose photo {_pct(s['pose_photo_top1'])}"),
        (m, "top-5", _pct(s["top5"]), f"chance {_pct(s['chance_top5'])}"),
    ] + ([
        (m, "top-1 / top-5, cross pairs", f"{_pct(s['top1_cross'])} / {_pct(s['top5_cross'])}",
         f"{s['n_cross']} pairs whose pose person is another identity"),
        (m, "pose leak", _pct(s["pose_leak"]), "output nearest to the pose person (lower is better)"),
    ] if s.get("n_cross") else [])


def _expression(e: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    b = e["baseline_identity_photo"]
    rows = [_means("expression", "0 = the pose's expression (mouth, eyes, brows); the identity photo's error is "
                                 "what copying that photo keeps"),
            ("expression", "error / IOD (mean of 4)", _f(e["error"]["mean"]),
             f"identity photo {_f(b['error']['mean'])}; 0 = the pose's expression")]
    for k in e["descriptors"]:
        rows.append(("expression", f"  {k.replace('_', ' ')}", _f(e[k]["mean"]), f"identity photo {_f(b[k]['mean'])}"))
    return rows


def _pose(p: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    b, angles = p["baseline_identity_photo"], ("d_yaw", "d_pitch", "d_roll")
    return [
        _means("pose", "how far the output's head pose and landmarks are from its pose photo; 0 = the pose's own"),
        ("pose", "face found in output", _pct(p["face_found_in_output"]), f"{p['n_measured']} measured"),
        ("pose", "landmark error / IOD", _f(p["landmark_error"]["mean"]), f"identity photo {_f(b['landmark_error']['mean'])}"),
        ("pose", "|d yaw| / |d pitch| / |d roll| deg", " / ".join(_f(p[k]["mean"], "{:.1f}") for k in angles),
         "identity photo " + " / ".join(_f(b[k]["mean"], "{:.1f}") for k in angles)),
    ]


def _recon(rc: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows = [_means("recon", "PSNR, SSIM higher and LPIPS lower: closer to the original; an unrelated face is "
                            "the floor")]
    fl = rc["floor"] or {}
    for kind in ("self", "cycle"):
        if rc[kind] is None:
            continue
        for m, fmt in (("psnr", "{:.2f} dB"), ("ssim", "{:.3f}"), ("lpips", "{:.3f}")):
            rows.append((f"recon {kind}", m.upper(), _f(rc[kind][m]["mean"], fmt),
                         f"unrelated face {_f((fl.get(m) or {}).get('mean'), fmt)}" if fl else ""))
    rows.append(("recon", "held-out", str(rc["n_images"]), rc["held_out"]))
    return rows


def _pm(v: Any, sd: Any, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else f"{fmt.format(v)} ± {fmt.format(sd or 0.0)}"


def _realism(s: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    if s.get("skipped"):
        return [("realism", "classifier AUC", "-", f"skipped: {s['skipped']}")]
    return [
        ("realism", "classifier AUC", _pm(s["auc"], s["auc_std"]),
         f"real vs real {_pm(s['control_auc'], s['control_auc_std'])}; 0.5: a classifier cannot tell these faces "
         "from real photos; 1.0: it always can"),
        ("realism", "Fréchet distance", _f(s["fd"], "{:.1f}"),
         f"real vs real {_f(s['fd_control'], '{:.1f}')} (the floor at this sample size); lower is more real"),
        ("realism", "features", str(s.get("n_features", "-")),
         "dlib face ResNet texture: mean and std per channel of its stem and 4 stages, inside the face only"),
        ("realism", "faces compared", f"{s['n_mixed']} / {s['n_real']}",
         f"mixed / real ({s['n_real_people']} people: {s['real_source']}); per image: realism_detectability"),
    ]


def _table_rows(r: EvalReport) -> list[tuple[str, str, str, str]]:
    rows = _counts(r.counts) if r.counts else []
    for name, s in (r.results.get("id-sim") or {}).items():
        rows += _id_sim(name, s)
    for name, s in (r.results.get("id-retrieval") or {}).items():
        rows += _id_retrieval(name, s)
    if r.results.get("pose"):
        rows += _pose(r.results["pose"])
    if r.results.get("expression"):
        rows += _expression(r.results["expression"])
    if r.results.get("realism"):
        rows += _realism(r.results["realism"])
    if r.results.get("recon"):
        rows += _recon(r.results["recon"])
    for method, b in (r.results.get("baselines") or {}).items():
        rows.append((f"baseline {method}", "top-1 cross / pose leak / expression / realism AUC",
                     f"{_pct(b['top1_cross'] if b['top1_cross'] is not None else b['top1'])} / {_pct(b['pose_leak'])} / "
                     f"{_f(b['expression_error'])} / {_f(b.get('realism_auc'), '{:.2f}')}", "the same pairs, no model"))
    nets = ", ".join(f"{n['name']}" + (" (trained against)" if n["trained_against"] else "") for n in r.networks)
    if nets:
        rows.append(("network", "identity", nets, "distance to the identity's mean embedding"))
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in r.timings.items())
    rows.append(("speed", "images/s", f"{r.images_per_s:.1f}",
                 f"{r.images} images in {r.elapsed_s:.1f} s" + (f" ({stages})" if stages else "")))
    return rows

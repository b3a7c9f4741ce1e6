"""``g2g eval``: numbers users can cite about a mix run (OUT) or a model's reassembly (MODEL + DATA).

Metrics (one module each; the method is spelled out there)
- ``id-sim`` (g2g.eval.retrieval): identity embedding of each mixed crop vs its
  identity source (the mean embedding of that identity's aligned crops) and vs
  its pose source (the baseline it must beat), in the network's distance (dlib:
  Euclidean, threshold 0.6) and cosine, read against same- and different-person
  distributions of the run's real crops; the share of outputs whose nearest
  identity of the run is the right one.
- ``id-retrieval`` (g2g.eval.retrieval): rank of the right identity among all
  identities of the run (top-1, top-5, chance level).
- ``pose`` (g2g.eval.pose): MTCNN 5-point error and yaw/pitch/roll differences
  of the mixed crop vs its pose crop; baseline: the identity crop vs the pose crop.
- ``expression`` (g2g.eval.expression): mouth opening and width, eye opening
  and brow height from dlib's 68 points, output vs pose crop, over the IOD;
  baseline: the identity's photo vs the pose crop (what copy-paste keeps).
- ``realism`` (g2g.eval.realism): a classifier two-sample test: ROC AUC of a
  grouped, cross-validated logistic regression separating the mixed faces from
  real faces of the same people, on texture statistics of the face region in
  dlib's face ResNet (0.5: indistinguishable); beside it the same test between
  two halves of the real people, the Fréchet distance with its control, and each
  output's detectability.
- ``--baselines`` (g2g.eval.baselines): paste, warp-paste and expression-paste on
  the run's own pairs, scored the same way, next to the model's numbers.
- ``recon`` (g2g.eval.recon): PSNR, SSIM and LPIPS of self and cycle
  reconstructions of held-out crops, on ONNX Runtime; a vs b is the floor.

Skipped manifest lines (and ok lines whose crop file is gone) are counted and
reported, never evaluated. Everything is written atomically under the eval out
dir (default TARGET/eval): report.json, per_image.csv, id_sim_hist.png,
examples.png, realism_examples.png (recon: recon_per_image.csv,
recon_examples.png). The identity and realism networks are built once into the
user cache from dlib's weights, with numpy (g2g.faces.dlib_graph).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from g2g.config import EvalConfig
from g2g.eval.runs import MixRun, load_mix, mixed_crop, model_facts, read_crop
from g2g.eval.retrieval import (IDENTITY_NETS, identity_metrics, open_identity_net, parse_nets,
                               reference_distributions, trained_against)
from g2g.eval.plots import examples_sheet, plot_id_hist, write_csv
from g2g.eval.expression import expression_metrics
from g2g.eval.pose import pose_metrics
from g2g.eval.recon import recon_metrics
from g2g.eval.report import EvalError, EvalReport
from g2g.bundle import DEFAULT_MODEL_DIR
from g2g.methods import BASELINES
from g2g.io.files import atomic_write_json, confine_writes, refuse_links
from g2g.io.runfolder import unread_note
from g2g.faces.preprocess import DEFAULT_ZOOM
from g2g.faces.detect import MTCNN_MIN_FACE

MIX_METRICS = ("id-sim", "id-retrieval", "pose", "expression", "realism")
METRICS = MIX_METRICS + ("recon",)

__all__ = ["evaluate", "EvalReport", "EvalError", "METRICS", "MIX_METRICS", "IDENTITY_NETS", "parse_metrics",
           "load_mix", "MixRun", "read_crop", "open_identity_net", "reference_distributions"]


def _merged_with_earlier(path: Path, report: EvalReport) -> dict[str, Any]:
    """This run's report, keeping the results of metrics that an earlier run into the same folder computed and this
    one did not (``g2g eval OUT -m pose`` after ``-m all`` must not lose the identity numbers)."""
    import json

    new = report.to_dict()
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return new
    if not isinstance(old, dict) or old.get("target") != new.get("target"):
        return new
    kept = {k: v for k, v in (old.get("results") or {}).items() if k not in new["results"]}
    if kept:
        new["results"] = {**kept, **new["results"]}
        new["kept_from_earlier_run"] = sorted(kept)
    return new


def parse_metrics(items: Sequence[str]) -> list[str]:
    """``["id-sim,pose", "recon"]`` -> metric names in canonical order; ``all`` expands later."""
    names = [m.strip() for it in items for m in str(it).split(",") if m.strip()] or ["all"]
    for m in names:
        if m != "all" and m not in METRICS:
            raise EvalError(f"unknown --metric {m!r}; choose from {', '.join(METRICS)}, all", usage=True)
    return names


def _choose(target: Path, metrics: Sequence[str], data: Path | None) -> tuple[list[str], bool, bool]:
    """(metrics to run in canonical order, TARGET is a mix output, TARGET is a model); one-line errors otherwise."""
    wanted = parse_metrics(metrics)
    is_mix = (target / "manifest.jsonl").is_file()
    is_model = (target / "g2g_model.json").is_file()
    if not target.is_dir() or not (is_mix or is_model):
        raise EvalError(f"{target} is neither a g2g mix output (manifest.jsonl) nor an exported model (g2g_model.json)")
    if "all" in wanted:
        chosen = (list(MIX_METRICS) if is_mix else []) + (["recon"] if data is not None else [])
        if not chosen:
            raise EvalError(f"nothing to evaluate: {target} is a model; give DATA for --metric recon")
    else:
        chosen = [m for m in METRICS if m in wanted]
    if any(m in MIX_METRICS for m in chosen) and not is_mix:
        raise EvalError(f"--metric {','.join(m for m in chosen if m in MIX_METRICS)} needs a g2g mix output folder; "
                        f"{target} is a model")
    if "recon" in chosen and data is None:
        raise EvalError("--metric recon needs DATA (a g2g prepare folder): g2g eval --metric recon MODEL DATA")
    return chosen, is_mix, is_model


def _identity(run: MixRun, nets: list[str], facts: dict[str, Any] | None, model_dir: Path | None, cfg: EvalConfig,
              report: EvalReport, rows: dict[int, dict[str, Any]], out_dir: Path) -> None:
    """id-sim and id-retrieval with each network; the first one's histogram and example sheet."""
    trained_net, trained_why = trained_against(facts)
    method = run.run.get("method")
    if run.model_dir is None and method in BASELINES:  # a paste method: there is no model and no training
        trained_net, trained_why = None, f"no model ({method} is not trained)"
    elif trained_net is None and facts is None:
        report.warnings.append(f"cannot tell which identity network the model was trained against "
                               f"({trained_why}); dlib is the trainer's default")
    for name in nets:
        net = open_identity_net(name, run.align, cfg.device, cfg.batch_size, model_dir)
        same = trained_net == name
        report.networks.append({"name": name, "distance": net.metric, "threshold": net.threshold,
                                "providers": list(net.info.providers), "trained_against": same,
                                "training": trained_why})
        if same:
            others = ", ".join(n for n in IDENTITY_NETS if n != name)
            report.warnings.append(
                f"{name} is the identity network this model was trained against ({trained_why}): its scores "
                f"overstate identity transfer; check with a second network ({others}) where its weights are available")
        t1 = time.perf_counter()
        sim, retr, arrays = identity_metrics(run, net, cfg, rows)
        report.timings[f"identity:{name}"] = time.perf_counter() - t1
        if "id-sim" in report.metrics:
            report.results.setdefault("id-sim", {})[name] = sim
            if sim["reference"]["note"]:
                report.notes.append(f"id-sim ({name}): {sim['reference']['note']}")
        if "id-retrieval" in report.metrics:
            report.results.setdefault("id-retrieval", {})[name] = retr
            if len(run.gallery) <= 5:
                report.notes.append(f"id-retrieval: only {len(run.gallery)} identities, so top-5 is trivially 1")
        if name == nets[0]:
            plot_id_hist(out_dir / "id_sim_hist.png", arrays, net)
            examples_sheet(out_dir / "examples.png", run, arrays, cfg.examples)
            report.files["id_sim_hist"] = str(out_dir / "id_sim_hist.png")
            if (out_dir / "examples.png").exists():
                report.files["examples"] = str(out_dir / "examples.png")


def _mix(run: MixRun, nets: list[str], facts: dict[str, Any] | None, model_dir: Path | None, cfg: EvalConfig,
         report: EvalReport, out_dir: Path) -> None:
    """The mix metrics of ``report.metrics`` on one mix run, and its per_image.csv (skipped lines with their reason)."""
    n_skipped = sum(run.skipped.values())
    report.counts = {"planned": run.planned, "ok": len(run.ok), "skipped": dict(sorted(run.skipped.items())),
                     "n_skipped": n_skipped, "identities": len(run.gallery)}
    report.notes += [n for n in [unread_note(run.unread)] if n]
    if run.skipped:
        report.notes.append(f"{n_skipped} of {run.planned} planned outputs skipped and not evaluated "
                            f"({', '.join(f'{k}: {v}' for k, v in sorted(run.skipped.items()))})")
    if not run.run:
        report.warnings.append(f"no run.json in the mix output: crop size taken from the files, zoom assumed {DEFAULT_ZOOM}")
    rows = {id(r): {"pose": r.get("pose"), "identity": r.get("identity"), "status": "ok",
                    "mixed_crop": mixed_crop(r), "output": r.get("output")} for r in run.ok}
    if "id-sim" in report.metrics or "id-retrieval" in report.metrics:
        _identity(run, nets, facts, model_dir, cfg, report, rows, out_dir)
    if "pose" in report.metrics:
        from g2g.faces.detect import FaceDetector

        t1 = time.perf_counter()
        detector = FaceDetector(cfg.device, min_face=max(MTCNN_MIN_FACE, run.align.size // 6))
        report.results["pose"] = pose_metrics(run, detector, cfg, rows)
        report.timings["pose"] = time.perf_counter() - t1
    if "expression" in report.metrics:
        t1 = time.perf_counter()
        report.results["expression"] = expression_metrics(run, cfg, rows)
        report.timings["expression"] = time.perf_counter() - t1
    if "realism" in report.metrics:
        _realism(run, facts, cfg, report, rows, out_dir)
    report.images += len(run.ok)
    if any(m in MIX_METRICS for m in report.metrics):
        skipped_rows = [{"pose": r.get("pose"), "identity": r.get("identity"), "status": "skipped",
                         "reason": r["reason"]} for r in run.skipped_recs]
        write_csv(out_dir / "per_image.csv", [*rows.values(), *skipped_rows])
        report.files["per_image_csv"] = str(out_dir / "per_image.csv")


def _realism(run: MixRun, facts: dict[str, Any] | None, cfg: EvalConfig, report: EvalReport,
             rows: dict[int, dict[str, Any]], out_dir: Path) -> None:
    """The realism test (g2g.eval.realism), with a warning when the model was trained against its network."""
    from g2g.eval.realism import realism_metrics

    t1 = time.perf_counter()
    trained_net, trained_why = trained_against(facts)
    if trained_net == "dlib":
        report.warnings.append(f"realism: the model was trained with a loss on dlib's face ResNet ({trained_why}), "
                               "the network whose features the realism test reads: it may understate what shows")
    res = realism_metrics(run, cfg, rows, out_dir, report.notes)
    report.results["realism"] = res
    if res.get("skipped"):
        report.notes.append(f"realism skipped: {res['skipped']}")
    elif Path(res["sheet"]).exists():
        report.files["realism_examples"] = res["sheet"]
    report.timings["realism"] = time.perf_counter() - t1


def _baselines(run: MixRun, nets: list[str], cfg: EvalConfig, report: EvalReport, out_dir: Path) -> None:
    """The no-model methods on the run's own pairs, with the run's mix metrics (g2g.eval.baselines)."""
    from g2g.eval.baselines import baseline_runs, headline

    t1 = time.perf_counter()
    for method, folder in baseline_runs(run, out_dir).items():
        sub = EvalReport(target=str(folder), metrics=[m for m in report.metrics if m in MIX_METRICS],
                         out_dir=str(folder / "eval"), device=cfg.device)
        _mix(load_mix(folder), nets, None, None, cfg, sub, folder / "eval")
        report.results.setdefault("baselines", {})[method] = headline(sub.results)
    report.timings["baselines"] = time.perf_counter() - t1


def evaluate(target: Path, metrics: Sequence[str], cfg: EvalConfig, data: Path | None = None) -> EvalReport:
    """Evaluate a mix output folder (id-sim, id-retrieval, pose, expression, realism) and/or a model bundle on
    DATA (recon).

    ``target`` is a mix OUT (its run.json names the model) or a MODEL_DIR.
    ``metrics`` may hold ``all``: every metric the inputs allow (recon needs DATA).
    """
    t0 = time.perf_counter()
    target = Path(target)
    chosen, is_mix, is_model = _choose(target, metrics, data)
    if cfg.batch_size < 1 or cfg.max_pairs < 1 or cfg.max_images < 1 or cfg.real_max < 2:
        raise EvalError("--batch-size, max_pairs and max_images must be >= 1, --real-max >= 2")
    nets = parse_nets(cfg.eval_net)
    # reports go beside what they measure (OUT/eval, MODEL/eval; an extra folder does not touch a bundle's files),
    # except for the model inside the installed package, whose report goes to ./g2g-eval/<model name>
    packaged = not is_mix and target.resolve() == DEFAULT_MODEL_DIR.resolve()
    default_out = Path("g2g-eval") / target.resolve().name if packaged else target / "eval"
    out_dir = Path(cfg.out_dir) if cfg.out_dir else default_out
    confine_writes(out_dir if cfg.out_dir or packaged else target)  # OUT/eval -> /elsewhere is refused, not followed
    refuse_links(out_dir / "report.json")
    report = EvalReport(target=str(target), metrics=chosen, out_dir=str(out_dir), device=cfg.device)

    run = load_mix(target) if is_mix else None
    model_dir = target if is_model else run.model_dir  # type: ignore[union-attr]
    facts = model_facts(model_dir)
    if facts is not None and int(facts.get("step") or 0) == 0:
        report.notes.append(f"the model in {model_dir} is at training step 0 (untrained): expect different-person "
                            "identity scores and no faces in the outputs")
    if run is not None:
        _mix(run, nets, facts, model_dir, cfg, report, out_dir)
        if cfg.baselines:
            _baselines(run, nets, cfg, report, out_dir)
    if "recon" in chosen:
        if model_dir is None or facts is None:
            raise EvalError(f"no model to reconstruct with: {target} names no readable exported model")
        t1 = time.perf_counter()
        report.results["recon"] = recon_metrics(model_dir, facts, Path(data), cfg, report, out_dir)  # type: ignore[arg-type]
        report.images += report.results["recon"]["n_images"]
        report.timings["recon"] = time.perf_counter() - t1
    report.elapsed_s = time.perf_counter() - t0
    atomic_write_json(out_dir / "report.json", _merged_with_earlier(out_dir / "report.json", report))
    report.files["report"] = str(out_dir / "report.json")
    if cfg.json:
        atomic_write_json(Path(cfg.json), report.to_dict())
        report.files["json"] = str(cfg.json)
    return report

"""``g2g export``: its options, parsed into a config, and one call into the library."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from g2g.cli.common import JSON_HELP, _flag, _print_json, _verb, app, console


# (owned by the exporter: export/onnx_export.py)
@app.command()
@_verb
def export(
    run: Path = typer.Argument(..., help="A training RUN folder (its latest checkpoint) or a checkpoint .pt file."),
    out: Path = typer.Option(..., "-o", "--out", help="MODEL_DIR to write: the ONNX parts, g2g_model.json and SHA256SUMS."),
    onnx: bool = _flag(True, "--onnx", help="Export to ONNX (the only format, so the default; accepted for scripts)."),
    fp16: bool = _flag(False, "--fp16", help="Store the generator in float16 (half the size); inputs and outputs stay float32."),
    check_data: Optional[Path] = typer.Option(None, "--check-data", help="A prepare DATA folder: check ONNX vs PyTorch on its faces (default: random input)."),
    opset: int = typer.Option(18, help="ONNX opset."),
    identity: bool = _flag(False, "--identity/--no-identity", help="Also bundle dlib's identity network for g2g eval (identity.onnx, 23 MB)."),
    as_json: bool = _flag(False, "--json", help=JSON_HELP),
) -> None:
    """Export a checkpoint's EMA generator to a self-describing ONNX bundle, parity-checked against PyTorch.

    Details: docs/cli/export.md
    """
    from g2g.export.onnx_export import export_bundle

    report = export_bundle(run, out, fp16=fp16, opset=opset, check_images=check_data, identity=identity, progress=True)
    console.print(report.table())
    _print_json(report, as_json)
    for note in report.notes:
        console.print(f"note: {note}")

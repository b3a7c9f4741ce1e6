"""The inference install (``pip install g2g``, no extras) runs prepare, mix and eval with torch absent.

Each test runs g2g in a subprocess where torch, torchvision and facenet-pytorch cannot be imported (a finder first on
``sys.meta_path`` refuses them, so ``import torch`` raises ModuleNotFoundError as on a machine without them) and the
user cache is an empty folder, so the detector, the identity network and the realism network must all come without
torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import copy_subset, need_shared

BLOCK = ("torch", "torchvision", "facenet_pytorch", "stlpips_pytorch")
PRELUDE = (
    "import sys\n"
    "class NoTorch:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    f"        if name.split('.')[0] in {BLOCK!r}:\n"
    "            raise ModuleNotFoundError(f'No module named {name!r} (blocked)', name=name)\n"
    "sys.meta_path.insert(0, NoTorch())\n"
    "from g2g.cli import main\n"
    "def g2g(*args):\n"
    "    sys.argv = ['g2g', *args]\n"
    "    try:\n        main()\n    except SystemExit as e:\n        assert not e.code, (args, e.code)\n"
)


def _run(code: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "CUDA_VISIBLE_DEVICES": "", "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run([sys.executable, "-c", PRELUDE + code], env=env, capture_output=True, text=True)


def test_torch_is_really_blocked(tmp_path):
    res = _run("import torch\n", tmp_path)
    assert res.returncode != 0 and "ModuleNotFoundError" in res.stderr


def test_importing_the_inference_side_imports_no_torch(tmp_path):
    """Importing the verbs, every registered method and the core reaches no torch (and no exporter)."""
    code = (
        "import g2g.mix, g2g.eval, g2g.prepare, g2g.demo, g2g.methods, g2g.faces.detect, g2g.faces.masked_rest\n"
        "from g2g.methods import MODEL_MIXERS, REGISTRY, load\n"
        "for target in [m.target for m in REGISTRY.values()] + list(MODEL_MIXERS.values()):\n    load(target)\n"
        "bad = sorted(n for n in sys.modules if n.startswith(('g2g.export', 'g2g.train')))\n"
        "assert not bad, bad\n"
    )
    res = _run(code, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]


def test_prepare_mix_and_eval_run_without_torch(tmp_path):
    """prepare, a mix of raw photos (detector on ONNX Runtime), a mix of aligned crops and eval of identity,
    expression and realism (networks built into the empty cache without torch)."""
    need_shared()
    raw = copy_subset(tmp_path / "raw", identities=4, per_identity=2)
    poses, ids = tmp_path / "poses", tmp_path / "ids"
    poses.mkdir()
    for d in sorted(raw.iterdir()):  # 4 poses x 3 identities: enough mixed faces for the realism test
        (poses / f"{d.name}.jpg").write_bytes(sorted(d.iterdir())[0].read_bytes())
    copy_subset(ids, identities=3, per_identity=1, root=raw)
    cache, out = tmp_path / "cache", tmp_path / "out"
    code = (
        f"g2g('prepare', {str(raw)!r}, '-o', {str(tmp_path / 'data')!r}, '--size', '64', '--device', 'cpu')\n"
        f"g2g('mix', {str(poses)!r}, {str(ids)!r}, '-o', {str(out)!r}, '--size', '128', '--device', 'cpu')\n"
        f"g2g('eval', {str(out)!r}, '--metric', 'id-retrieval,expression,realism', '--device', 'cpu')\n"
        "assert 'torch' not in sys.modules\n"
    )
    res = _run(code, cache)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    manifest = [json.loads(ln) for ln in (out / "manifest.jsonl").read_text().splitlines()]
    assert sum(r.get("status") == "ok" for r in manifest) == 4 * 3, manifest
    report = json.loads((out / "eval" / "report.json").read_text())
    assert {"id-retrieval", "expression", "realism"} <= set(report["results"]), report.keys()
    assert report["results"]["realism"].get("auc") is not None, report["results"]["realism"]
    crops = list((tmp_path / "data").rglob("*.png"))
    assert len(crops) >= 7, crops  # 8 photos of 4 people, MTCNN on ONNX Runtime
    built = sorted(p.name.split("-")[0] for p in cache.rglob("*.onnx"))
    assert built == ["identity", "realism"], built  # both eval networks, built without torch

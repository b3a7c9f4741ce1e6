"""README's Python API example and typical use run as written (on a few real photos, in a temporary folder), and its
methods table is the registry's."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from conftest import need_shared

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_api_example_runs_as_written(tmp_path, monkeypatch, capsys):
    wild = need_shared()
    text = README.read_text()
    code = re.search(r"### Python API.*?```python\n(.*?)```", text, re.S).group(1)
    for person in sorted(p for p in wild.iterdir() if p.is_dir())[:3]:
        (tmp_path / "raw_photos" / person.name).mkdir(parents=True)
        for f in sorted(person.glob("*.jpg"))[:2]:
            shutil.copy(f, tmp_path / "raw_photos" / person.name / f.name)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    n_ok, written = (int(x) for x in re.match(r"(\d+) crops; (\d+) mixed", printed).groups())
    assert n_ok >= 4 and written == n_ok * 3  # every prepared photo x each of the 3 people
    saved = json.loads((tmp_path / "out" / "eval" / "report.json").read_text())  # the report lands beside the mix
    assert {"id-retrieval", "expression"} <= set(saved["results"])


def test_typical_use_runs_top_to_bottom(tmp_path):
    """README's "Typical use" block, line by line as a shell script, with the training options swapped for the tiny
    preset (the written ones train for days on a CPU), on 4 people x 3 real photos."""
    import subprocess

    wild = need_shared()
    if shutil.which("g2g") is None:
        pytest.skip("the g2g command is not on PATH (activate the virtual environment)")
    block = re.search(r"## Typical use\n\n```bash\n(.*?)```", README.read_text(), re.S).group(1)
    tiny = {"--preset appearance --size 64": "--preset appearance-tiny --size 32", "--batch-size 8": "--batch-size 2",
            "--steps 100000": "--steps 2 --workers 0 --val-people 2"}
    for written, small in tiny.items():
        assert written in block, written  # the README still says what the substitution replaces
        block = block.replace(written, small)
    people = sorted(p for p in wild.iterdir() if p.is_dir())[:4]
    for person in people:
        (tmp_path / "raw_photos" / person.name).mkdir(parents=True)
        for f in sorted(person.glob("*.jpg"))[:3]:
            shutil.copy(f, tmp_path / "raw_photos" / person.name / f.name)
    (tmp_path / "poses").mkdir()
    for person in people[:2]:
        shutil.copy(sorted(person.glob("*.jpg"))[0], tmp_path / "poses" / f"{person.name}.jpg")
        shutil.copytree(tmp_path / "raw_photos" / person.name, tmp_path / "ids" / person.name)
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=1200)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    ev = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert set(ev["results"]["baselines"]) == {"paste", "warp-paste", "expression-paste"}
    assert json.loads((tmp_path / "runs" / "r1" / "split.json").read_text())["val"]  # recon had held-out people


def test_the_methods_table_is_the_registry():
    """README lists exactly the methods `--method` offers, with their registry summaries."""
    from g2g.methods import METHODS, markdown_table

    text = README.read_text()
    assert markdown_table() in text
    listed = re.findall(r"^\| `([\w-]+)`", text.split("| method | what it does |")[1].split("\n\n")[0], re.M)
    assert tuple(listed) == METHODS

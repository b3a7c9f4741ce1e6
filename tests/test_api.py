"""The Python API (``from g2g import load_model, mix_images``): images in memory in and out, on g2g mix's own path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from g2g.errors import G2GError


def _photos(raw: Path) -> dict[str, list[Path]]:
    """person -> their photos (sorted) of the real test set."""
    return {d.name: sorted(d.glob("*.jpg")) for d in sorted(p for p in raw.iterdir() if p.is_dir())}


@pytest.fixture(scope="module")
def paste():
    from g2g import load_model

    return load_model(method="paste", size=64, device="cpu")


def test_arrays_in_arrays_out_pil_in_pil_out_and_the_identity_matters(raw_small, paste):
    from g2g import mix_images

    people = list(_photos(raw_small).values())
    pose_pil = Image.open(people[0][0])
    pose_arr = np.asarray(Image.open(people[1][0]).convert("RGB"))
    ids = [[Image.open(f) for f in people[2][:2]], np.asarray(Image.open(people[3][0]).convert("RGB"))]

    results = mix_images(paste, poses=[pose_pil, pose_arr], identities=ids)
    assert [(r.pose, r.identity) for r in results] == [(0, 0), (0, 1), (1, 0), (1, 1)]  # row-major
    assert all(r.record["status"] == "ok" and r.record["reason"] is None for r in results)
    assert all(isinstance(r.image, Image.Image) and r.image.size == pose_pil.size for r in results[:2])
    assert all(isinstance(r.image, np.ndarray) and r.image.shape == pose_arr.shape and r.image.dtype == np.uint8
               for r in results[2:])
    r = results[0]
    assert r.record["identity_sources"] == ["identity-0/photo-0", "identity-0/photo-1"]  # K = 2 photos of one person
    assert r.record["output"] is None and r.record["identity_crops"] == []  # nothing was written
    a, b = (np.asarray(x.image, dtype=int) for x in results[2:])
    assert np.abs(a - b).mean() > 1  # another identity, another face
    assert np.abs(a - pose_arr).max() > 50  # the face changed ...
    again = mix_images(paste, poses=pose_arr, identities=ids)  # one pose alone
    assert [x.identity for x in again] == [0, 1]
    assert np.array_equal(again[0].image, results[2].image) and np.array_equal(again[1].image, results[3].image)


def test_faceless_images_are_skips_with_a_reason_and_bad_arguments_one_line_errors(raw_small, paste):
    from g2g import mix_images

    people = list(_photos(raw_small).values())
    photo = np.asarray(Image.open(people[0][0]).convert("RGB"))
    blank = np.full((120, 160, 3), 128, np.uint8)
    grey = np.asarray(Image.fromarray(photo).convert("L"))  # (H, W)
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])  # (H, W, 4)
    res = mix_images(paste, poses=[blank, grey, rgba], identities=[Image.open(people[1][0]), blank])
    by = {(r.pose, r.identity): r for r in res}
    for key in [(0, 0), (0, 1)]:  # a pose without a face
        assert by[key].image is None and by[key].record["status"] == "skipped"
        assert by[key].record["reason"] == "no-face" and "pose-0" in by[key].record["message"]
    assert by[(1, 1)].image is None and by[(1, 1)].record["reason"] == "no-face"  # an identity without one
    assert "identity identity-1: no usable photo" in by[(1, 1)].record["message"]
    assert by[(1, 0)].record["status"] == by[(2, 0)].record["status"] == "ok"  # grey and RGBA arrays are converted
    assert by[(1, 0)].image.shape == photo.shape and by[(2, 0)].image.shape == photo.shape
    for poses, ids, match in [("pose.jpg", [blank], "must be an image"), ([photo.astype(np.float32)], [blank], "uint8"),
                              ([photo], [[[blank]]], "must be images"), ([], [blank], "no image given"),
                              ([photo[..., :2]], [blank], "shape")]:
        with pytest.raises(G2GError, match=match) as e:
            mix_images(paste, poses=poses, identities=ids)
        assert "\n" not in str(e.value)
    with pytest.raises(G2GError, match="--faces"):
        mix_images(paste, poses=[photo], identities=[blank], faces="several")


def test_the_api_is_what_g2g_mix_writes(tmp_path, raw_small):
    """The same photos through ``g2g mix --method paste --format png`` (size auto on both sides) and through the API:
    the same pixels, and the same manifest record but for the names of files."""
    from typer.testing import CliRunner

    from g2g import load_model, mix_images
    from g2g.api import FILE_FIELDS
    from g2g.cli import app
    from g2g.mix import latest_records

    people = _photos(raw_small)
    names = list(people)
    poses, ids = tmp_path / "poses", tmp_path / "ids"
    poses.mkdir()
    pose_files = [people[names[0]][0], people[names[1]][1]]
    for f in pose_files:
        shutil.copy(f, poses / f.name)
    for n in names[2:4]:
        (ids / n).mkdir(parents=True)
        for f in people[n][:2]:
            shutil.copy(f, ids / n / f.name)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["mix", str(poses), str(ids), "-o", str(out), "--method", "paste", "--format", "png",
                                   "--device", "cpu"])
    assert res.exit_code == 0, res.output
    recs = latest_records(out)

    model = load_model(method="paste", device="cpu")
    results = mix_images(model, poses=[Image.open(poses / f.name) for f in sorted(pose_files, key=lambda f: f.name)],
                         identities=[[Image.open(f) for f in sorted((ids / n).iterdir())] for n in names[2:4]])
    assert len(results) == len(recs) == 4
    pose_names = sorted(f.name for f in pose_files)
    for r in results:
        rec = recs[(pose_names[r.pose], names[2 + r.identity])]
        assert rec["status"] == r.record["status"] == "ok"
        written = np.asarray(Image.open(out / rec["output"]).convert("RGB"), dtype=int)
        assert np.abs(written - np.asarray(r.image, dtype=int)).max() <= 1, (r.pose, r.identity)
        names_and_files = {"pose", "identity", "identity_sources", "identity_crops", "faces", *FILE_FIELDS}
        assert set(r.record) == set(rec)  # the manifest's fields; all but the names and files are equal
        assert {k: v for k, v in r.record.items() if k not in names_and_files} == {
            k: v for k, v in rec.items() if k not in names_and_files}
    assert json.loads((out / "run.json").read_text())["align"]["size"] in model.mixers  # size auto: the same side


def test_import_g2g_stays_light_and_the_api_needs_no_torch():
    """``import g2g`` loads neither the API nor torch; the API's names load it on first use, still without torch."""
    import subprocess
    import sys

    code = ("import sys, g2g\n"
            "assert 'g2g.api' not in sys.modules and 'numpy' not in sys.modules, sorted(sys.modules)\n"
            "from g2g import load_model, mix_images\n"
            "assert 'g2g.api' in sys.modules and callable(load_model) and callable(mix_images)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision') or "
            "m.startswith(('g2g.train', 'g2g.export')))\n"
            "assert not bad, bad\n"
            "try:\n    g2g.nothing\nexcept AttributeError:\n    pass\nelse:\n    raise AssertionError\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]


def test_faces_all_reaches_the_api(paste):
    """``faces="all"`` goes through to mix's aligner: every face of a photo with two people is replaced."""
    from conftest import need_shared
    from g2g import mix_images

    group = need_shared() / "7207" / "014220.jpg"  # two people, both faces pass the default --min-score
    if not group.is_file():
        pytest.skip(f"{group} not found")
    person = sorted((need_shared() / "7202").glob("*.jpg"))[0]
    one, every = (mix_images(paste, poses=Image.open(group), identities=Image.open(person), faces=f)[0]
                  for f in ("largest", "all"))
    assert one.record["faces_replaced"] == 1 and every.record["faces_replaced"] == 2
    assert np.abs(np.asarray(one.image, dtype=int) - np.asarray(every.image, dtype=int)).max() > 50

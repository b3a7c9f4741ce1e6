"""g2g mix inputs: one photo or a folder, every face of a group photo or only the person of --reference, and video
files named as such. Real photos from ../shared (skipped where it is absent), the paste method, 128 px crops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import WILD, cli_error, need_shared
from g2g.cli import app
from g2g.io.files import read_jsonl

# Two different people, one clear face each (celeba-wild): the right face is the larger one, so that --faces largest
# and --reference (a second photo of the left person) pick different faces.
LEFT, RIGHT = "7201/001085.jpg", "7204/004623.jpg"
LEFT_AGAIN = "7201/007710.jpg"  # the left person in another photo: the reference
OTHER = "7204/007778.jpg"  # the right person alone: no face of the left person in it
IDENTITY = "7202/006155.jpg"  # a third person, the identity mixed in
FAST = ["--method", "paste", "--size", "128", "--format", "png", "--workers", "2"]


def wild(rel: str) -> Path:
    need_shared()
    path = WILD / rel
    if not path.is_file():
        pytest.skip(f"{path} not found in ../shared")
    return path


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def group(tmp_path_factory) -> tuple[Path, int]:
    """(a group photo: LEFT and RIGHT side by side at the same height, the x where RIGHT starts)."""
    left, right = rgb(wild(LEFT)), rgb(wild(RIGHT))
    h = min(left.shape[0], right.shape[0])
    halves = [np.asarray(Image.fromarray(a).resize((round(a.shape[1] * h / a.shape[0]), h), Image.BICUBIC))
              for a in (left, right)]
    path = tmp_path_factory.mktemp("group") / "group.png"
    Image.fromarray(np.concatenate(halves, axis=1)).save(path)
    return path, halves[0].shape[1]


def mix(*args: str | Path) -> tuple[object, list[dict]]:
    res = CliRunner().invoke(app, ["mix", *map(str, args), *FAST])
    assert res.exit_code == 0, res.output
    out = Path(args[args.index("-o") + 1])
    return res, list(read_jsonl(out / "manifest.jsonl"))


def changed(group: tuple[Path, int], out: Path, rec: dict) -> tuple[float, float]:
    """Mean absolute pixel change of the output against the group photo, in its left and right halves."""
    path, x = group
    d = np.abs(rgb(out / rec["output"]).astype(np.int16) - rgb(path).astype(np.int16))
    return float(d[:, :x].mean()), float(d[:, x:].mean())


def test_one_pose_photo_and_one_identity_photo(tmp_path):
    pose, ident = wild(LEFT), wild(IDENTITY)
    out = tmp_path / "out"
    _, recs = mix(pose, ident, "-o", out)
    assert [(r["status"], r["pose"], r["identity"], r["output"]) for r in recs] == [
        ("ok", "001085.jpg", "006155", "001085__006155.png")]  # named as from folders: pose stem, identity stem
    assert sorted(p.name for p in out.glob("*.png")) == ["001085__006155.png"]
    run = json.loads((out / "run.json").read_text())
    assert run["poses_root"] == str(pose.resolve()) and run["ids_root"] == str(ident.resolve())
    res = CliRunner().invoke(app, ["eval", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "eval" / "report.json").read_text())
    assert report  # eval read run.json and the manifest of a run made from two files
    _, again = mix(pose, ident, "-o", out)  # resumes: nothing redone
    assert len(again) == 1


def test_faces_all_replaces_every_face_largest_one(tmp_path, group):
    ident = wild(IDENTITY)
    _, recs = mix(group[0], ident, "-o", tmp_path / "all", "--faces", "all")
    (rec,) = recs
    left, right = changed(group, tmp_path / "all", rec)
    assert rec["faces_replaced"] == 2 and len(rec["faces"]) == 2 and left > 1.0 and right > 1.0, (left, right)
    boxes = [f["box"] for f in rec["faces"]]
    assert sorted(b[0] < group[1] for b in boxes) == [False, True]  # one box in each half
    crops = [f["mixed_crop"] for f in rec["faces"]]
    assert crops == ["aligned/mixed/group__006155.png", "aligned/mixed/group__006155_f1.png"]
    assert all((tmp_path / "all" / c).is_file() for c in crops + [f["pose_crop"] for f in rec["faces"]])

    _, (one,) = mix(group[0], ident, "-o", tmp_path / "largest")
    left, right = changed(group, tmp_path / "largest", one)
    assert one["faces_replaced"] == 1 and right > 1.0 and left == 0.0, (left, right)  # the right face is larger


def test_faces_all_with_crop_only_writes_a_crop_per_face(tmp_path, group):
    _, (rec,) = mix(group[0], wild(IDENTITY), "-o", tmp_path / "out", "--faces", "all", "--crop-only")
    assert [f["mixed_crop"] for f in rec["faces"]] == ["group__006155.png", "group__006155_f1.png"]
    assert rec["output"] == rec["mixed_crop"] == "group__006155.png"
    assert all(rgb(tmp_path / "out" / f["mixed_crop"]).shape == (128, 128, 3) for f in rec["faces"])


def test_reference_replaces_only_that_person(tmp_path, group):
    poses = tmp_path / "poses"
    poses.mkdir()
    (poses / "group.png").write_bytes(group[0].read_bytes())
    (poses / "other.jpg").write_bytes(wild(OTHER).read_bytes())
    out = tmp_path / "out"
    res, recs = mix(poses, wild(IDENTITY), "-o", out, "--faces", "all", "--reference", wild(LEFT_AGAIN))
    by_pose = {r["pose"]: r for r in recs}
    rec = by_pose["group.png"]
    left, right = changed(group, out, rec)
    assert rec["faces_replaced"] == 1 and left > 1.0 and right == 0.0, (left, right)  # the left, smaller face
    assert rec["faces"][0]["box"][2] <= group[1] and rec["faces"][0]["reference_distance"] < 0.6
    skip = by_pose["other.jpg"]  # the right person alone: a recorded skip, not an error
    assert skip["status"] == "skipped" and skip["reason"] == "no-reference-match"
    assert skip["message"].startswith("pose other.jpg: no face matches --reference")
    assert "no-reference-match" in res.output  # in the summary table

    first = (out / rec["output"]).read_bytes()
    other = ["-o", out, "--faces", "all", "--reference", wild(RIGHT)]  # another person: the settings differ
    res = CliRunner().invoke(app, ["mix", str(poses), str(wild(IDENTITY)), *map(str, other), *FAST])
    cli_error(res, 3, "reference")  # not taken for done, not mixed over silently
    _, again = mix(poses, wild(IDENTITY), *other, "--overwrite")
    rec2 = [r for r in again if r["pose"] == "group.png"][-1]  # redone, now the right face
    assert (out / rec2["output"]).read_bytes() != first
    left, right = changed(group, out, rec2)
    assert left == 0.0 and right > 1.0, (left, right)


def test_reference_with_largest_takes_the_closest_match(tmp_path, group):
    _, (rec,) = mix(group[0], wild(IDENTITY), "-o", tmp_path / "out", "--reference", wild(LEFT_AGAIN))
    left, right = changed(group, tmp_path / "out", rec)
    assert rec["faces_replaced"] == 1 and left > 1.0 and right == 0.0, (left, right)


def test_reference_without_a_face_is_one_line(tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), (128, 128, 128)).save(blank)
    res = CliRunner().invoke(app, ["mix", str(wild(LEFT)), str(wild(IDENTITY)), "-o", str(tmp_path / "out"),
                                   "--reference", str(blank), *FAST])
    cli_error(res, 3, "--reference")
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_video_files_are_named_as_videos(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42")  # a video header is enough: it is never opened
    res = CliRunner().invoke(app, ["mix", str(clip), str(wild(IDENTITY)), "-o", str(tmp_path / "o1"), *FAST])
    assert "ffmpeg -i clip.mp4 frames/%06d.png" in cli_error(res, 3, "is a video")
    poses = tmp_path / "poses"
    poses.mkdir()
    (poses / "a.mov").write_bytes(b"x")
    (poses / "b.mkv").write_bytes(b"x")
    res = CliRunner().invoke(app, ["mix", str(poses), str(wild(IDENTITY)), "-o", str(tmp_path / "o2"), *FAST])
    cli_error(res, 3, "2 video file(s) skipped: g2g reads photos; extract frames first")
    (poses / "p.jpg").write_bytes(wild(LEFT).read_bytes())
    (poses / "notes.txt").write_text("not a photo")
    res, recs = mix(poses, wild(IDENTITY), "-o", tmp_path / "o3")
    assert [r["status"] for r in recs] == ["ok"]
    assert "POSES: 2 video file(s) skipped" in res.output  # a counted note, apart from other files
    assert "POSES: 1 file(s) without an image extension" in res.output


def test_a_file_that_is_not_a_photo_is_one_line(tmp_path):
    text = tmp_path / "pose.txt"
    text.write_text("hello")
    res = CliRunner().invoke(app, ["mix", str(text), str(wild(IDENTITY)), "-o", str(tmp_path / "o"), *FAST])
    cli_error(res, 3, "is not an image file")

"""README and docs/ as a newcomer meets them: short, plain, every link resolves, and every command of README's main
job and its Python API block runs as written (on a few real photos from ../shared, in a temporary folder)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import need_shared

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MIX_DOC = REPO / "docs" / "cli" / "mix.md"
PAGES = [README, REPO / "MODEL_CARD.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
GROUP = ("7226", "199308.jpg")  # a photo in ../shared with three faces MTCNN accepts (two people and a false one)


def _section(title: str) -> str:
    """The text of README's ``## title`` section, up to the next ``## ``."""
    return re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README.read_text(), re.S | re.M).group(1)


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def _commands(block: str) -> list[str]:
    """A shell block's commands, one per line (backslash continuations joined)."""
    return [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip() and not c.startswith("#")]


def test_readme_is_short_and_opens_with_the_commands_ci_runs():
    text = README.read_text()
    assert len(text.encode()) < 10_000
    first_two = [b.strip() for b in _blocks(text, "bash")[:2]]
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.startswith(("python3", ". .venv"))]
    assert first_two == ci  # CI installs and tests exactly as README's first two commands say
    assert text.index("```bash") < text.index("\n## ")  # ... and they come before anything else


def test_readme_speaks_plain_words():
    """No internal shorthand in the README (docs/ explains the method in its own terms)."""
    text = README.read_text()
    for word in (r"E_A", r"E_B", r"\bseed\b", r"frontier", r"\bIOD\b", r"K-shot", r"identity issue", r"\bissue"):
        assert not re.search(word, text, re.I), word


def test_no_page_is_written_around_one_remote_machine():
    for page in [*PAGES, REPO / "bench" / "device_kit.py", REPO / "bench" / "device_run.sh"]:
        text = page.read_text()
        for phrase in ("narrow pipe", "device tool", "device call", r"\blease\b", "15 minutes", "15-minute",
                       r"run\(command"):
            assert not re.search(phrase, text, re.I), (page.name, phrase)


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a markdown page."""
    heads = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", page.read_text(), flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, broken


def test_the_demo_picture_is_small():
    from PIL import Image

    pic = REPO / "docs" / "images" / "demo.jpg"
    assert "](docs/images/demo.jpg)" in README.read_text()
    assert pic.stat().st_size < 150_000
    with Image.open(pic) as im:
        assert im.format == "JPEG" and im.width <= 800


def test_the_mix_page_lists_the_registry_and_every_option():
    """docs/cli/mix.md holds the methods table exactly as the registry prints it, and a paragraph per option."""
    import typer

    from g2g.cli import app
    from g2g.methods import METHODS, markdown_table

    text = MIX_DOC.read_text()
    assert markdown_table() in text
    listed = re.findall(r"^\| `([\w-]+)`", text.split("| method | what it does |")[1].split("\n\n")[0], re.M)
    assert tuple(listed) == METHODS
    mix = typer.main.get_command(app).commands["mix"]  # type: ignore[attr-defined]
    options = {o for p in mix.params if not p.hidden for o in p.opts if o.startswith("--")} - {"--help", "--out"}
    assert options and not [o for o in sorted(options) if f"**{o}" not in text and f"/ {o}**" not in text]


# ---------------------------------------------------------------- README's commands, run as written

def _people(n: int) -> list[Path]:
    return [p for p in sorted(need_shared().iterdir()) if p.is_dir() and len(list(p.glob("*.jpg"))) >= 4][:n]


def _photo(person: Path, i: int) -> Path:
    return sorted(person.glob("*.jpg"))[i]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """What README's commands name: pose.jpg, person.jpg, face.jpg (another photo of the pose's person), poses/
    (two people and a group photo) and ids/ (two other people, two photos each), copied from ../shared."""
    if shutil.which("g2g") is None:
        pytest.skip("the g2g command is not on PATH (activate the virtual environment)")
    a, b, c, d = _people(4)
    w = tmp_path_factory.mktemp("readme")
    shutil.copy(_photo(a, 0), w / "pose.jpg")
    shutil.copy(_photo(b, 0), w / "person.jpg")
    shutil.copy(_photo(a, 1), w / "face.jpg")
    (w / "poses").mkdir()
    for person in (a, c):
        shutil.copy(_photo(person, 2), w / "poses" / f"{person.name}.jpg")
    if (need_shared() / GROUP[0] / GROUP[1]).is_file():
        shutil.copy(need_shared() / GROUP[0] / GROUP[1], w / "poses" / "group.jpg")
    for person in (b, d):
        (w / "ids" / person.name).mkdir(parents=True)
        for i in (1, 2):
            shutil.copy(_photo(person, i), w / "ids" / person.name / _photo(person, i).name)
    return w


def _run(line: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", line], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}, timeout=900)


MIX_LINES = [c for b in _blocks(_section("Mix faces"), "bash") for c in _commands(b)]


def _not_there_yet(line: str, run: subprocess.CompletedProcess) -> str | None:
    """Why a README mix form failed because g2g does not have its feature yet (else None: a real failure)."""
    from g2g.config import MIX_FACE_POLICIES

    if "no such option" in run.stderr.lower():
        return "an option of this line is not in g2g mix yet"
    if "--faces all" in line and "all" not in MIX_FACE_POLICIES:
        return "g2g mix --faces all is not there yet"
    if "is not a folder" in run.stderr:
        return "g2g mix does not take a single photo yet"
    return None


@pytest.mark.slow
@pytest.mark.parametrize("line", MIX_LINES)
def test_readme_mix_forms_run_as_written(line, workdir):
    """Each command of README's "Mix faces" section, in order in one folder (the --overwrite line meets the out/
    of the first), writes mixed photos in its format."""
    from PIL import Image

    assert line.startswith("g2g mix "), line
    args = shlex.split(line.split("#")[0])
    out = workdir / args[args.index("-o") + 1]
    before = {p: p.stat().st_mtime_ns for p in out.glob("*__*")} if out.is_dir() else {}
    run = _run(line, workdir)
    if run.returncode != 0 and (why := _not_there_yet(line, run)):
        pytest.skip(why)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    ext = args[args.index("--format") + 1] if "--format" in args else "jpg"
    mixed = sorted(out.glob(f"*__*.{ext}"))  # <pose>__<identity>.<ext>
    assert mixed, sorted(p.name for p in out.iterdir())
    with Image.open(mixed[0]) as im:
        assert im.format == {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[ext]
    if "--reference" in args:  # face.jpg shows the person of the first pose only: the other pose is left alone
        assert {p.name.split("__")[0] for p in mixed} == {_people(1)[0].name}
    if "--faces" in args and (workdir / "poses" / "group.jpg").is_file():  # the group photo: every face mixed
        records = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
        assert max(len(r.get("faces") or []) for r in records if r.get("pose") == "group.jpg") >= 2, records[0]
    if "--overwrite" in args:  # what the first line wrote into out/ was written again, not resumed
        assert before and all(p.stat().st_mtime_ns != t for p, t in before.items())


@pytest.mark.slow
def test_readme_train_block_runs_with_test_sizes(tmp_path):
    """README's train / export / mix / eval block as a shell script, with test-size options appended to the train
    lines (as written they train for an hour): 4 people x 3 real photos, 2 + 1 steps of the tiny recipe."""
    if shutil.which("g2g") is None:
        pytest.skip("the g2g command is not on PATH (activate the virtual environment)")
    people = _people(4)
    for person in people:
        (tmp_path / "photos" / person.name).mkdir(parents=True)
        for i in range(3):
            shutil.copy(_photo(person, i), tmp_path / "photos" / person.name / _photo(person, i).name)
    (tmp_path / "poses").mkdir()
    for person in people[:2]:
        shutil.copy(_photo(person, 3), tmp_path / "poses" / f"{person.name}.jpg")
        shutil.copytree(tmp_path / "photos" / person.name, tmp_path / "ids" / person.name)
    lines = _commands(_blocks(_section("Train, export and evaluate your own model"), "bash")[0])
    assert [ln.split()[1] for ln in lines] == ["prepare", "train", "train", "export", "mix", "eval"]
    tiny = {False: " --preset appearance-tiny --size 32 --batch-size 2 --steps 2 --workers 0 --val-people 2",
            True: " --steps 3 --workers 0"}  # appended: a later option wins
    script = "\n".join(ln.split("#")[0].rstrip() + tiny["--resume" in ln] if ln.startswith("g2g train") else ln
                       for ln in lines)
    run = _run(script, tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    ckpts = sorted((tmp_path / "runs" / "r1" / "checkpoints").glob("step_*.pt"))
    assert ckpts and ckpts[-1].name.endswith("00000003.pt")  # the --resume line went on from step 2
    assert (tmp_path / "models" / "r1" / "SHA256SUMS").is_file()
    assert list((tmp_path / "out-r1").glob("*__*.jpg"))
    report = json.loads((tmp_path / "out-r1" / "eval" / "report.json").read_text())
    assert set(report["results"]["baselines"]) == {"paste", "warp-paste", "expression-paste"}


@pytest.mark.slow
def test_readme_python_api_block_runs_verbatim(workdir, monkeypatch, capsys):
    code = _blocks(_section("Python API"), "python")[0]
    try:
        from g2g import load_model, mix_images  # noqa: F401
    except ImportError:
        pytest.skip("g2g.load_model / g2g.mix_images are not in this checkout yet")
    monkeypatch.chdir(workdir)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].endswith(" ok"), printed  # one (pose, identity), mixed
    assert len(list(workdir.glob("mixed_*.jpg"))) == 1


def test_the_model_card_keeps_the_data_licence():
    """A model trained on CelebA carries CelebA's non-commercial research restriction: the card must say so."""
    card = (REPO / "MODEL_CARD.md").read_text()
    assert "CelebA is for non-commercial research use only, and so is this model." in card
    assert "](MODEL_CARD.md)" in README.read_text()

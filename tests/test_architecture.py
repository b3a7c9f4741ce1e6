"""The structure the code promises: arrows one way, methods and recipes behind registries, functions a page long.

Read from the source files of the installed layout (g2gcli/ -> g2g, train/ -> g2g.train, export/ -> g2g.export):
every import that runs counts, the lazy ones inside functions too; only those under ``if TYPE_CHECKING:`` (names for
annotations, never executed) do not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYOUT = {"g2gcli": "g2g", "train": "g2g.train", "export": "g2g.export"}
TORCH = ("torch", "torchvision", "facenet_pytorch", "stlpips_pytorch", "onnxscript")
MAX_LINES = 80


def _modules() -> dict[str, Path]:
    mods = {}
    for folder, pkg in LAYOUT.items():
        for f in (ROOT / folder).rglob("*.py"):
            parts = [p for p in f.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            mods[".".join([pkg, *parts])] = f
    return mods


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those inside ``if TYPE_CHECKING:`` blocks."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo += node.orelse
            continue
        todo += ast.iter_child_nodes(node)


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> the g2g modules it imports, module -> the torch-family packages it imports)."""
    mods = _modules()

    def resolve(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {m: set() for m in mods}
    torch: dict[str, set[str]] = {}
    for m, f in mods.items():
        for node in _runtime_nodes(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module, *(f"{node.module}.{a.name}" for a in node.names)] \
                if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for n in names:
                if n.split(".")[0] in TORCH:
                    torch.setdefault(m, set()).add(n.split(".")[0])
                r = resolve(n) if n.startswith("g2g") else ""
                package_of_m = mods[r].name == "__init__.py" and m.startswith(r + ".") if r else False
                if r and r != m and not package_of_m:  # a module importing its own package's __init__ is no arrow
                    graph[m].add(r)
    return graph, torch


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        v = todo.pop()
        if v not in seen:
            seen.add(v)
            todo += graph.get(v, ())
    return seen


def test_no_import_circle():
    graph, _ = _graph()
    circles = sorted({tuple(sorted(_reach(graph, m) & {w for w in graph if m in _reach(graph, w)})) for m in graph})
    assert [c for c in circles if len(c) > 1] == []


@pytest.mark.parametrize("verb", ["g2g.mix", "g2g.prepare", "g2g.eval", "g2g.demo", "g2g.methods"])
def test_the_inference_side_reaches_neither_torch_nor_the_exporter(verb):
    graph, torch = _graph()
    reached = _reach(graph, verb)
    assert sorted(m for m in reached if m.startswith(("g2g.export", "g2g.train"))) == []
    # none imports torch, not even lazily: recon's LPIPS runs an ONNX graph the training install exports in a subprocess
    assert sorted(m for m in reached if m in torch) == []


def test_training_does_not_import_the_cli():
    graph, _ = _graph()
    for m in graph:
        if m.startswith(("g2g.train", "g2g.export")):
            assert "g2g.cli" not in _reach(graph, m), m


RECIPE_NAMES = {"funit", "appearance", "pooled"}  # "dlib" is also an identity network name; its encoder is caught by the flag
RECIPE_FLAGS = {"masked_rest", "recipe", "identity_encoder"}
REGISTRIES = ("g2gcli/config.py", "g2gcli/methods/__init__.py", "train/recipes/")


def _branches_on_recipe(tree: ast.AST) -> list[int]:
    """Lines of ``if``/``elif``/conditional expressions that test a recipe's name or flag (asking the recipe object
    itself, ``self.recipe.wants_discriminator(cfg)``, is the polymorphism that replaces such branches)."""
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.If, ast.IfExp, ast.While)):
            receivers = {id(sub.value) for sub in ast.walk(node.test) if isinstance(sub, ast.Attribute)}
            for sub in ast.walk(node.test):
                named = isinstance(sub, ast.Constant) and sub.value in RECIPE_NAMES
                flag = isinstance(sub, ast.Attribute) and sub.attr in RECIPE_FLAGS and id(sub) not in receivers
                if named or flag:
                    hits.append(node.lineno)
    return hits


def _sources() -> list[tuple[str, ast.AST]]:
    """(path relative to the repository, parsed module) of every source file of the layout."""
    return [(f.relative_to(ROOT).as_posix(), ast.parse(f.read_text()))
            for folder in LAYOUT for f in sorted((ROOT / folder).rglob("*.py"))]


def test_no_recipe_branch_outside_the_recipes_and_registries():
    found = [f"{rel}:{line}" for rel, tree in _sources() if not rel.startswith(REGISTRIES)
             for line in _branches_on_recipe(tree)]
    assert found == []


def test_functions_fit_a_page():
    long = [f"{rel}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for rel, tree in _sources() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= MAX_LINES]
    assert long == []


def test_every_method_in_the_table_opens_and_names_itself(tmp_path):
    """The registry is what --method offers, and each no-model method opens without a model."""
    from g2g.methods import BASELINES, METHODS, REGISTRY, open_mixer

    assert METHODS == ("auto", *REGISTRY) and set(BASELINES) < set(REGISTRY)
    for name in BASELINES:
        mixer = open_mixer(name, None, size=64)
        assert mixer.name == name and mixer.align.size == 64
    assert len({open_mixer(n, None).sha256 for n in BASELINES}) == len(BASELINES)

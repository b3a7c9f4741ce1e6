"""Example photos that come from installed packages, never from the repository.

scikit-image ships NASA's portrait of astronaut Eileen Collins and matplotlib
ships the US Navy's portrait of Grace Hopper; both are in the public domain. A
mirrored copy of each gives the demo a second pose per person.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from PIL import Image, ImageOps

from g2g.io.files import atomic_save_image


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package} is not installed")
    path = Path(spec.submodule_search_locations[0], *parts)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found in package {package}")
    return path


EXAMPLES = {
    # identity name -> (package, path inside the package)
    "eileen_collins": ("skimage", "data", "astronaut.png"),
    "grace_hopper": ("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg"),
}


def write_examples(dst: Path) -> tuple[Path, Path]:
    """Write ``dst/poses`` (each photo and its mirror) and ``dst/ids`` (one photo per person).

    Returns (poses_dir, ids_dir). Existing files are left as they are.
    """
    poses, ids = Path(dst) / "poses", Path(dst) / "ids"
    for name, (package, *parts) in EXAMPLES.items():
        image = Image.open(_package_file(package, *parts)).convert("RGB")
        targets = {
            ids / f"{name}.jpg": image,
            poses / f"{name}.jpg": image,
            poses / f"{name}_mirrored.jpg": ImageOps.mirror(image),
        }
        for path, img in targets.items():
            if not path.exists():
                atomic_save_image(path, img)
    return poses, ids

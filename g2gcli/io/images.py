"""Safe photo loading for ``prepare`` and ``mix``.

Real folders hold zero-byte files, half-copied JPEGs, CMYK scans, 16-bit PNGs,
phone photos that rely on an EXIF rotation tag and the odd text file named
``.jpg``. :func:`load_rgb` turns any of them into an 8-bit RGB array or raises
:class:`SkipImage` with a stable reason code, so a batch records why a file was
skipped and goes on.

Choices:
- Alpha (RGBA, LA, PA, P with transparency) is composited on white: dropping it
  would expose whatever colour hides under transparent pixels (often black).
- 16-bit greyscale (``I;16*``) is scaled by 1/257 to 0-255; 32-bit ``I`` the same
  when its maximum exceeds 255 (otherwise it already holds 8-bit values);
  float ``F`` is clipped to 0-255.
- The whole file is decoded (``img.load()``) so truncation is found here, not in
  the middle of training. This relies on Pillow's default
  ``ImageFile.LOAD_TRUNCATED_IMAGES = False``, which g2g never changes.
- :func:`scan_folder` reports files without an image extension so ``prepare``
  records them as ``not-an-image``, and hidden files and folders (``.DS_Store``,
  ``._x.jpg``, ``.cache/``) and OS thumbnails as ``hidden``, instead of silently
  ignoring them; symlinked folders are followed, each real folder once.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from g2g.io.runfolder import FOLDER_MARKER, LOCK_PREFIX, folder_owner

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pnm"}
)
# video containers: g2g reads photos, so these get a hint to extract frames instead of "not an image"
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"})
VIDEO_HINT = "g2g reads photos; extract frames first, e.g. `ffmpeg -i clip.mp4 frames/%06d.png`"
# what g2g prepare writes at the top of DATA: not inputs when DATA is read as photos (mix POSES, prepare SRC)
PREPARE_FILES = frozenset({"manifest.jsonl", "prepare_config.json", "preview.jpg"})
SYSTEM_NAMES = frozenset({"thumbs.db", "desktop.ini"})  # counted as hidden

# Stable skip reason codes (written in manifests, counted in summaries).
REASONS = {
    "empty-file": "the file has zero bytes",
    "unreadable": "the file could not be opened (permissions, a folder, an I/O error)",
    "not-an-image": "not a format Pillow can read",
    "truncated": "the image data ends early",
    "corrupt": "the image data is damaged",
    "too-large": "more pixels than max_pixels (decompression-bomb guard)",
    "too-small": "shorter side below the minimum",
    "no-face": "no face detected",
    "low-score": "faces found, none with a detection score >= min_score",
    "face-too-small": "faces found, none with a box side >= min_face",
    "multiple-faces": "more than one accepted face with --faces skip-multiple",
    "no-reference-match": "no face in the pose photo matches the person of --reference",
    "detector-error": "the face detector failed on this image",
    "write-error": "the aligned crop could not be written",
    "hidden": "a hidden file or folder (its name starts with '.'), or a system file (Thumbs.db, desktop.ini)",
    "repeated-folder": "a folder reached a second time through a symlink (read once)",
    "unreadable-folder": "a folder that could not be listed (permissions, an I/O error): nothing inside it was read",
    "not-a-regular-file": "a FIFO, socket, device or broken link: never opened",
}


class SkipImage(Exception):
    """A per-file problem: the batch records ``reason`` and goes on."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass
class LoadedImage:
    """An 8-bit RGB photo and what was done to get it."""

    rgb: np.ndarray  # (H, W, 3) uint8, EXIF orientation applied
    conversions: list[str] = field(default_factory=list)  # e.g. ["exif-rotated", "converted from CMYK"]
    pages: int = 1  # pages (TIFF) or frames (GIF, WebP, APNG) in the file: only the first is read

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels, like PIL."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


def _to_rgb(img, conversions: list[str]):
    """Any Pillow mode -> 8-bit RGB image, noting the conversion."""
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(img)
        if mode == "F":
            a8 = np.clip(a, 0, 255)
        elif mode.startswith("I;16") or a.max(initial=0) > 255:
            a8 = np.asarray(a, dtype=np.float64) / 257.0
        else:
            a8 = a
        a8 = np.clip(np.rint(a8), 0, 255).astype(np.uint8)
        conversions.append(f"converted from {'16-bit' if mode.startswith('I;16') else mode} greyscale")
        return Image.fromarray(a8, "L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "P+transparency"
    elif mode == "P":
        conversions.append("converted from palette")
        return img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:  # any transparent pixel
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            conversions.append(f"converted from {mode} (alpha composited on white)")
            return Image.alpha_composite(white, rgba).convert("RGB")
        conversions.append(f"converted from {mode} (opaque alpha dropped)")
        return rgba.convert("RGB")
    if mode in ("L", "1"):
        conversions.append("converted from greyscale")
    else:  # CMYK, YCbCr, LAB, HSV, ...
        conversions.append(f"converted from {mode}")
    return img.convert("RGB")


def _upright(img, conversions: list[str]):
    """The image with its EXIF orientation applied, noting it."""
    from PIL import ImageOps

    orientation = img.getexif().get(0x0112, 1)
    if orientation in (None, 1):
        return img
    conversions.append(f"exif-rotated (orientation {orientation})")
    return ImageOps.exif_transpose(img)


def rgb_in_memory(image: "object") -> LoadedImage:
    """A PIL image, or a uint8 array (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA, as :func:`load_rgb` would give it
    from a file (EXIF orientation applied, alpha composited on white). Raises G2GError for anything else."""
    from PIL import Image

    from g2g.errors import G2GError

    conversions: list[str] = []
    if isinstance(image, Image.Image):
        rgb = np.asarray(_to_rgb(_upright(image, conversions), conversions), dtype=np.uint8)
    elif isinstance(image, np.ndarray):
        a = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
        mode = "L" if a.ndim == 2 else {3: "RGB", 4: "RGBA"}.get(a.shape[2]) if a.ndim == 3 else None
        if mode is None or a.dtype != np.uint8 or 0 in a.shape:
            raise G2GError(f"an image array must be uint8 of shape (H, W), (H, W, 3) or (H, W, 4), got {a.dtype} "
                           f"{tuple(image.shape)}")
        rgb = a if mode == "RGB" else np.asarray(_to_rgb(Image.fromarray(a, mode), conversions))
    else:
        raise G2GError(f"an image must be a PIL image or a numpy array, got {type(image).__name__}")
    return LoadedImage(np.ascontiguousarray(rgb), conversions)


def load_rgb(path: str | Path, max_pixels: int = 40_000_000, min_side: int = 32) -> LoadedImage:
    """Decode ``path`` fully into 8-bit RGB with EXIF orientation applied.

    Raises :class:`SkipImage` (empty-file, unreadable, not-an-image, truncated,
    corrupt, too-large, too-small) instead of returning something half-loaded.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise SkipImage("empty-file", "zero-byte file")
        f = open(path, "rb")
    except SkipImage:
        raise
    except OSError as e:
        raise SkipImage("unreadable", f"{type(e).__name__}: {e.strerror or e}") from None
    with f:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(f)  # reads the header only
        except UnidentifiedImageError:
            raise SkipImage("not-an-image", "Pillow cannot identify this file as an image") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise SkipImage("too-large", str(e)) from None
        except Exception as e:  # a broken header
            raise SkipImage("corrupt", f"{type(e).__name__}: {e}") from None
        w, h = img.size
        if w * h > max_pixels:
            raise SkipImage("too-large", f"{w}x{h} = {w * h} pixels > max_pixels {max_pixels}")
        if min(w, h) < min_side:
            raise SkipImage("too-small", f"{w}x{h}: shorter side < {min_side} px")
        try:
            pages = int(getattr(img, "n_frames", 1) or 1)  # counted before decoding: counting seeks
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img.load()  # full decode: truncation and corruption surface here
            conversions: list[str] = []
            if pages > 1:
                conversions.append(f"page 1 of {pages} read ({pages - 1} more not read: one photo per file)")
            rgb = np.asarray(_to_rgb(_upright(img, conversions), conversions), dtype=np.uint8)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise SkipImage("too-large", str(e)) from None
        except (OSError, SyntaxError, EOFError) as e:
            msg = f"{type(e).__name__}: {e}"
            reason = "truncated" if ("truncat" in msg.lower() or isinstance(e, EOFError)) else "corrupt"
            raise SkipImage(reason, msg) from None
        except Exception as e:  # damaged data can raise nearly anything inside a decoder
            raise SkipImage("corrupt", f"{type(e).__name__}: {e}") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise SkipImage("corrupt", f"decoded to shape {rgb.shape}, expected (H, W, 3)")
    return LoadedImage(np.ascontiguousarray(rgb), conversions, pages)


def multi_page_note(pages: "list[int]") -> str | None:
    """One line for a report when some files held more pages (or frames) than the one g2g reads, else None;
    ``pages``: :attr:`LoadedImage.pages` of the files read."""
    extra = [n - 1 for n in pages if n > 1]
    if not extra:
        return None
    return (f"{len(extra)} multi-page file(s) (TIFF pages, GIF/WebP frames): only the first page of each was read, "
            f"{sum(extra)} more page(s) were not; save one photo per file to use them")


def _walk(folder: Path, exclude: Path | None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(files, unused) under ``folder``, each sorted. Symlinked folders are followed, wherever they point, each real
    folder once; ``unused`` holds, with a REASONS code, the hidden files and folders (not descended into) and the
    folders reached a second time. ``exclude`` (an output folder inside) is skipped."""
    files: list[Path] = []
    unused: list[tuple[Path, str]] = []
    seen: set[str] = set()
    owner = folder_owner(folder)
    own = (PREPARE_FILES if owner == "prepare" else frozenset()) | ({FOLDER_MARKER} if owner else frozenset())
    def unreadable(e: OSError) -> None:
        if e.filename and Path(e.filename) != folder:
            unused.append((Path(e.filename), "unreadable-folder"))

    for root, dirs, names in os.walk(folder, followlinks=True, onerror=unreadable):
        rootp = Path(root)
        real = os.path.realpath(root)
        if real in seen:
            unused.append((rootp, "repeated-folder"))
            dirs[:] = []
            continue
        seen.add(real)
        keep = []
        for d in sorted(dirs):
            if exclude is not None and (rootp / d).resolve() == exclude:
                continue
            if d.startswith("."):
                unused.append((rootp / d, "hidden"))
            else:
                keep.append(d)
        dirs[:] = keep
        for n in names:
            if rootp == folder and (n in own or (owner and n.startswith(LOCK_PREFIX))):
                continue
            if n.startswith(".") or n.lower() in SYSTEM_NAMES:
                unused.append((rootp / n, "hidden"))
            elif not (rootp / n).is_file():  # follows links: a FIFO or socket, or a link to nothing
                unused.append((rootp / n, "not-a-regular-file"))
            else:
                files.append(rootp / n)
    key = lambda p: p.relative_to(folder).as_posix()  # noqa: E731
    return sorted(files, key=key), sorted(unused, key=lambda u: key(u[0]))


def scan_folder(folder: str | Path, exclude: str | Path | None = None
                ) -> tuple[list[Path], list[Path], list[tuple[Path, str]]]:
    """(images, other_files, unused) under ``folder``, recursive and sorted (see :func:`_walk`).

    Images are chosen by extension (case-insensitive); ``other_files`` are the
    rest, and ``unused`` the hidden and repeated entries with their reason, for
    the caller to record as skipped. ``exclude`` (e.g. an output folder inside
    ``folder``) is not descended into.
    """
    folder = Path(folder)
    ex = Path(exclude).resolve() if exclude is not None else None
    images, others = [], []
    files, unused = _walk(folder, ex)
    for p in files:
        (images if p.suffix.lower() in IMAGE_EXTENSIONS else others).append(p)
    return images, others, unused


def is_video(path: str | Path) -> bool:
    """A video file by its extension (GIF is an image: its first frame is read)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def video_note(others: "list[Path]") -> str | None:
    """The report line for the video files among ``others`` (:func:`scan_folder`'s non-images), else None."""
    n = sum(1 for p in others if is_video(p))
    return f"{n} video file(s) skipped: {VIDEO_HINT}" if n else None


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted, by extension)."""
    return scan_folder(folder)[0]

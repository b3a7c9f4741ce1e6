"""Training data from a ``g2g prepare`` folder: identity split, pair batches, landmark erasing.

Sampling is identity-balanced: every pair (a, b) draws identity A uniformly,
identity B uniformly among the others, then images within each identity, so a
person with 400 photos is not seen 100x more often than one with 4. The batch of
step t is a pure function of (seed, rank, t): resuming at step t re-creates the
exact batches with no sampler state to save, DataLoader workers cannot reorder
anything, and each DDP rank draws its own stream (the sharding that a
DistributedSampler gives a finite dataset).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from g2g.faces.preprocess import resize_to_model, to_input
from g2g.io.runfolder import unread_note
from g2g.prepare.records import read_manifest
from g2g.errors import G2GError

# 5-point order of the manifest (MTCNN's): left eye, right eye, nose, left mouth corner, right mouth corner.
FLIP_ORDER = [1, 0, 2, 4, 3]  # a horizontal flip swaps image-left and image-right points
SPLIT_STREAM, VAL_PAIRS_STREAM = 0x5EED, 0xA1  # seed words of the identity split and the sample-sheet pairs


class DataError(G2GError):
    """The DATA folder cannot be trained on (one-line message for the user)."""


@dataclass(frozen=True)
class Item:
    """One aligned crop of the DATA folder."""

    rel: str  # path relative to DATA (the manifest's "output")
    identity: str
    landmarks: tuple[tuple[float, float], ...]  # 5 x (x, y) in pixels of the crop file


def read_prepare_config(data: Path) -> dict[str, Any]:
    p = Path(data) / "prepare_config.json"
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _five_points(lm: Any) -> tuple[tuple[float, float], ...] | None:
    """A manifest's 5 crop landmarks as numbers, or None where the line holds something else."""
    try:
        points = tuple((float(x), float(y)) for x, y in lm)
    except (TypeError, ValueError):
        return None
    return points if len(points) == 5 else None


def load_items(data: Path, notes: list[str] | None = None) -> dict[str, list[Item]]:
    """The usable crops of ``DATA/manifest.jsonl`` grouped by identity (sorted, deterministic). Crops the manifest
    lists that are gone or no longer the bytes prepare wrote are left out and counted in ``notes``."""
    from g2g.io.files import intact

    data = Path(data)
    manifest = data / "manifest.jsonl"
    if not manifest.is_file():
        raise DataError(f"{data} has no manifest.jsonl; run `g2g prepare PHOTOS -o {data}` first")
    by_id: dict[str, list[Item]] = {}
    lost, unread = Counter(), Counter()
    for rec in read_manifest(data, unread=unread):
        lm = _five_points(rec.get("crop_landmarks"))
        if not rec.get("output") or rec.get("identity") in (None, "") or lm is None:
            continue
        if not (data / rec["output"]).is_file():
            lost["missing"] += 1
            continue
        if not intact(data / rec["output"], rec.get("output_digest")):
            lost["damaged"] += 1
            continue
        item = Item(rec["output"], str(rec["identity"]), lm)
        by_id.setdefault(item.identity, []).append(item)
    by_id = {k: sorted({it.rel: it for it in v}.values(), key=lambda it: it.rel) for k, v in sorted(by_id.items())}
    if unread and notes is not None:
        notes.append(f"{data}: {unread_note(unread)}")
    if lost and notes is not None:
        notes.append(f"{data}: " + " and ".join(f"{n} crop(s) {why}" for why, n in sorted(lost.items()))
                     + " on disk, left out of training (rerun g2g prepare on DATA's photos to redo them)")
    if len(by_id) < 2:
        raise DataError(f"{data}: cross training needs crops of at least 2 identities, found {len(by_id)} "
                        "(identities are the first-level folders given to `g2g prepare`)")
    return by_id


def split_identities(identities: list[str], val_fraction: float, seed: int, val_people: int = 0
                     ) -> tuple[list[str], list[str]]:
    """Seeded split by identity (no person in both): ``val_people`` people (else ``val_fraction`` of them) held out;
    at least 2 training identities stay."""
    ids = sorted(identities)
    order = np.random.default_rng([seed, SPLIT_STREAM]).permutation(len(ids))
    n_val = val_people if val_people > 0 else int(round(val_fraction * len(ids)))
    n_val = min(max(n_val, 1 if (val_fraction > 0 or val_people > 0) else 0), len(ids) - 2)
    val = sorted(ids[i] for i in order[:n_val])
    train = sorted(ids[i] for i in order[n_val:])
    return train, val


def fixed_val_pairs(by_id: dict[str, list[Item]], val: list[str], train: list[str], n: int, seed: int) -> list[tuple[str, str]]:
    """n fixed (identity A, identity B) pairs for sample sheets: held-out people where there are two or more."""
    pool = val if len(val) >= 2 else val + train
    rng = np.random.default_rng([seed, VAL_PAIRS_STREAM])
    pairs = []
    for i in range(n):
        a = pool[i % len(pool)]
        others = [x for x in pool if x != a]
        pairs.append((a, others[int(rng.integers(len(others)))]))
    return pairs


def load_image(path: Path, size: int) -> tuple[torch.Tensor, float]:
    """An aligned crop as (3,size,size) float in [-1,1], and the factor its landmarks scale by."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    w = rgb.shape[1]
    arr = resize_to_model(rgb, size)  # the resize and normalisation mix uses
    return torch.from_numpy(to_input(arr[None])[0]), size / w


def make_batch(data: Path, groups: list[tuple[list[Item], list[Item]]], size: int,
               flips: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """Stack pairs of K-image groups into a batch.

    Returns a_k, b_k (B,K,3,S,S); lm_a, lm_b (B,5,2) landmarks of a = a_k[:,0] and b = b_k[:,0].
    ``flips`` (B,2,K) bool mirrors images horizontally (landmarks follow).
    """
    out: dict[str, list] = {"a_k": [], "b_k": [], "lm_a": [], "lm_b": []}
    for i, (ga, gb) in enumerate(groups):
        for side, group in (("a", ga), ("b", gb)):
            imgs = []
            for j, item in enumerate(group):
                x, s = load_image(Path(data) / item.rel, size)
                lm = torch.tensor(item.landmarks, dtype=torch.float32) * s  # (5,2)
                if flips is not None and flips[i, int(side == "b"), j]:
                    x = x.flip(-1)
                    lm = torch.stack([size - 1 - lm[:, 0], lm[:, 1]], dim=1)[FLIP_ORDER]
                imgs.append(x)
                if j == 0:
                    out[f"lm_{side}"].append(lm)
            out[f"{side}_k"].append(torch.stack(imgs))
    return {k: torch.stack(v) for k, v in out.items()}


class PairBatches(torch.utils.data.Dataset):
    """Map-style dataset whose item ``t`` is the whole batch of training step t."""

    def __init__(self, data: Path, by_id: dict[str, list[Item]], identities: list[str], batch_size: int,
                 k_shot: int, size: int, seed: int, rank: int = 0, flip: bool = True, steps: int = 1 << 40):
        if len(identities) < 2:
            raise DataError("cross training needs at least 2 training identities")
        self.data, self.by_id, self.ids = Path(data), by_id, list(identities)
        self.batch_size, self.k, self.size = batch_size, max(1, k_shot), size
        self.seed, self.rank, self.flip, self.steps = seed, rank, flip, steps

    def __len__(self) -> int:
        return self.steps

    def _group(self, rng: np.random.Generator, identity: str) -> list[Item]:
        items = self.by_id[identity]
        replace = len(items) < self.k  # few photos: K draws with replacement
        return [items[i] for i in rng.choice(len(items), size=self.k, replace=replace)]

    def plan(self, step: int) -> tuple[list[tuple[list[Item], list[Item]]], np.ndarray]:
        """The pairs and flips of ``step`` (deterministic in seed, rank, step)."""
        rng = np.random.default_rng([self.seed, self.rank, step])
        groups = []
        n = len(self.ids)
        for _ in range(self.batch_size):
            a = int(rng.integers(n))
            b = (a + 1 + int(rng.integers(n - 1))) % n  # uniform over identities != a
            groups.append((self._group(rng, self.ids[a]), self._group(rng, self.ids[b])))
        flips = rng.random((self.batch_size, 2, self.k)) < 0.5 if self.flip else None
        return groups, flips

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        groups, flips = self.plan(step)
        return make_batch(self.data, groups, self.size, flips)


def landmark_mask(lm: torch.Tensor, size: int) -> torch.Tensor:
    """(B,5,2) landmarks -> (B,1,S,S) mask, 1 on the eyes, nose and mouth regions.

    Boxes scale with the inter-ocular distance d: each eye 0.6d x 0.4d (brow to
    lid), the nose 0.36d wide from 0.45d above its tip to 0.15d below, the mouth
    from corner to corner plus 0.15d, 0.4d high.
    """
    lm = lm.float()
    d = (lm[:, 1] - lm[:, 0]).norm(dim=1).clamp_min(1.0)  # (B,)
    centre_half = []  # (cx, cy, half-width, half-height) per region, each (B,)
    for e in (0, 1):
        centre_half.append((lm[:, e, 0], lm[:, e, 1], 0.30 * d, 0.20 * d))
    centre_half.append((lm[:, 2, 0], lm[:, 2, 1] - 0.15 * d, 0.18 * d, 0.30 * d))
    mouth = lm[:, 3:5]
    centre_half.append((mouth[..., 0].mean(1), mouth[..., 1].mean(1),
                        (mouth[:, 1, 0] - mouth[:, 0, 0]).abs() / 2 + 0.15 * d, 0.20 * d))
    boxes = torch.stack([torch.stack(c, dim=1) for c in centre_half], dim=1)  # (B,4,4)
    cx, cy, hw, hh = (boxes[..., i, None, None] for i in range(4))  # (B,4,1,1)
    coords = torch.arange(size, dtype=torch.float32, device=lm.device)
    inside = ((coords[None, None, None, :] - cx).abs() <= hw) & ((coords[None, None, :, None] - cy).abs() <= hh)
    return inside.any(dim=1, keepdim=True).float()  # (B,1,S,S)


def erase_landmarks(x: torch.Tensor, lm: torch.Tensor) -> torch.Tensor:
    """Grey out (0 in [-1,1]) the identity-specific regions of x (B,3,S,S) around landmarks lm (B,5,2)."""
    return x * (1.0 - landmark_mask(lm, x.shape[-1]).to(x.dtype))

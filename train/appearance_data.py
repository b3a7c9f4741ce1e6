"""Training batches of the ``appearance`` recipe: all crops in memory, 68 points, pairs that never leak the target.

A ``FaceBank`` holds the crops of a set of people at the model's size with their
68-point landmarks (from the prepare manifest's ``crop_landmarks68``; computed
once and cached in the run folder for DATA folders prepared before it existed).

Each batch element of step t (a pure function of seed, rank and t, so ``--resume``
continues exactly) draws a person P with at least two photos, a target photo x of
P, a different photo y of P (the identity source: **never x itself**) and a person
Q != P with a photo z. It yields three pairs:

- ``rec``: rest x, identity y  -> must give back x (the supervised reconstruction);
- ``mix``: rest z, identity x  -> P's face in z's pose and expression (δ·L_id, GAN);
- ``cyc``: rest x, identity = the mixed image, warped from its geometry back onto
  x's (``cyc_map``, applied in the trainer): the seed's reassembly, which must give
  back x again (γ·L_cyc).

Crops are flipped at random (landmarks follow). Torch is only used to stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from g2g.faces.masked_rest import pair_inputs, rest_inputs, warp_map
from g2g.io.files import atomic_write_bytes
from g2g.prepare.records import read_manifest
from g2g.faces.preprocess import to_input
from g2g.faces.landmarks import closest_shape, flip68, landmarks68
from g2g.methods.compose import Fixes

ID_CANDIDATES = 3  # photos of the target's person the identity source is chosen from
PLAN_STREAM, JITTER_STREAM = 0xA99, 0x3A5C  # seed words: the pairs of a step, and its mask jitter, are independent


@dataclass
class FaceBank:
    crops: np.ndarray  # (N, S, S, 3) uint8 at the model's size
    lm: np.ndarray  # (N, 68, 2) float32 in those pixels
    person: np.ndarray  # (N,) index into names
    names: list[str]
    rels: list[str]
    emb: np.ndarray | None = None  # (N, 2, D) identity embeddings of each crop and its mirror (the dlib encoder)

    def photos_of(self, p: int) -> np.ndarray:
        return np.flatnonzero(self.person == p)


def _read_cache(cache: Path | None) -> dict[str, np.ndarray]:
    if cache is None or not cache.is_file():
        return {}
    with np.load(cache, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _write_cache(cache: Path, lms: dict[str, np.ndarray]) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, **lms)
    atomic_write_bytes(cache, buf.getvalue())


def first_per_person(identities: list[str], cap: int | None) -> list[int]:
    """Indices of the first ``cap`` entries of each identity in ``identities``, in order (all when cap is None)."""
    seen: dict[str, int] = {}
    keep = []
    for i, name in enumerate(identities):
        seen[name] = seen.get(name, 0) + 1
        if cap is None or seen[name] <= cap:
            keep.append(i)
    return keep


def load_bank(data: Path, identities: list[str], size: int, zoom: float, cache: Path | None = None,
              max_per_person: int | None = None) -> FaceBank:
    """The crops of ``identities`` from the prepare folder ``data``, resized to ``size`` (as g2g mix resizes)."""
    from PIL import Image

    from g2g.faces.preprocess import resize_to_model

    data = Path(data)
    wanted = {name: i for i, name in enumerate(identities)}
    recs = [r for r in read_manifest(data) if str(r.get("identity")) in wanted and (data / r["output"]).is_file()]
    recs = sorted({r["output"]: r for r in recs}.values(), key=lambda r: r["output"])
    recs = [recs[i] for i in first_per_person([str(r["identity"]) for r in recs], max_per_person or None)]
    cached, computed = _read_cache(cache), False
    crops, lm = [], []
    for r in recs:
        with Image.open(data / r["output"]) as im:
            arr = np.asarray(im.convert("RGB"))
        points, key = r.get("crop_landmarks68"), r["output"].replace("/", "|")  # npz keys hold no slashes
        if not (isinstance(points, list) and len(points) == 68):  # a folder prepared before g2g stored them
            if key not in cached:
                cached[key], computed = landmarks68(arr, zoom)[0], True
            points = cached[key]
        crops.append(resize_to_model(arr, size))
        lm.append(np.asarray(points, np.float32) * (size / arr.shape[1]))
    if computed and cache is not None:
        _write_cache(cache, cached)
    return FaceBank(np.stack(crops), np.stack(lm).astype(np.float32),
                    np.asarray([wanted[str(r["identity"])] for r in recs]), list(identities),
                    [r["output"] for r in recs])


@torch.no_grad()
def embed_bank(bank: FaceBank, net: torch.nn.Module, cache: Path | None = None, batch: int = 128) -> np.ndarray:
    """(N, 2, D) embeddings by ``net`` of each crop and its mirror image, cached per crop and size in ``cache``."""
    size = bank.crops.shape[1]
    keys = [f"{rel.replace('/', '|')}|{size}" for rel in bank.rels]  # npz keys hold no slashes
    cached = _read_cache(cache)
    todo = [i for i, k in enumerate(keys) if k not in cached]
    dev = next(net.parameters()).device
    for j in range(0, len(todo), batch):
        idx = todo[j : j + batch]
        x = torch.from_numpy(to_input(bank.crops[idx])).to(dev)
        e = torch.stack([net(x), net(x.flip(3))], 1).float().cpu().numpy()
        cached.update({keys[i]: e[n] for n, i in enumerate(idx)})
    if todo and cache is not None:
        _write_cache(cache, cached)
    return np.stack([cached[k] for k in keys]).astype(np.float32)


def _stack(items: list, key: str) -> torch.Tensor:
    return torch.from_numpy(np.stack([getattr(it, key) for it in items]).astype(np.float32))


class AppearanceBatches(torch.utils.data.Dataset):
    """Map-style dataset whose item ``t`` is the whole batch of step t (see the module docstring)."""

    def __init__(self, bank: FaceBank, batch_size: int, seed: int, rank: int = 0, flip: bool = True,
                 steps: int = 1 << 40, jitter: bool = True, warp: bool = True, fixes: Fixes | None = None):
        self.bank, self.batch_size, self.seed, self.rank, self.flip, self.steps = bank, batch_size, seed, rank, flip, steps
        self.jitter, self.warp = jitter, warp  # warp: identity photos onto the target geometry (appearance)
        self.fixes = fixes  # a refiner: the base is the default method's composition with these fixes
        self.multi = [p for p in range(len(bank.names)) if len(bank.photos_of(p)) >= 2]
        if len(self.multi) < 2:
            from g2g.train.dataset import DataError

            raise DataError("the appearance recipe needs at least 2 training people with 2 or more photos each")

    def __len__(self) -> int:
        return self.steps

    def _photo(self, i: int, flip: bool) -> tuple[np.ndarray, np.ndarray]:
        crop, lm = self.bank.crops[i], self.bank.lm[i]
        if flip:
            return np.ascontiguousarray(crop[:, ::-1]), flip68(lm, crop.shape[0])
        return crop, lm

    def plan(self, step: int) -> list[tuple[int, int, int, np.ndarray]]:
        """(x, y, z, flips) indices into the bank for each element of ``step``."""
        rng = np.random.default_rng([self.seed, self.rank, step, PLAN_STREAM])
        out = []
        for _ in range(self.batch_size):
            p = self.multi[int(rng.integers(len(self.multi)))]
            xs = self.bank.photos_of(p)
            x = int(rng.choice(xs))
            # the identity source: of up to ID_CANDIDATES other photos of P, the one closest to x in landmarks,
            # as g2g mix picks the closest of an identity's K photos for each pose
            others = rng.permutation(xs[xs != x])[:ID_CANDIDATES]
            y = int(others[closest_shape(self.bank.lm[others], self.bank.lm[x])])
            q = int(rng.integers(len(self.bank.names) - 1))
            q = q + (q >= self.bank.person[x])  # any other person
            z = int(rng.choice(self.bank.photos_of(q))) if len(self.bank.photos_of(q)) else int(x)
            flips = rng.random(3) < 0.5 if self.flip else np.zeros(3, bool)
            flips[1] = flips[0]  # x and its identity source turn the same way (y was chosen as the closest to x)
            out.append((int(x), int(y), z, flips))
        return out

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.rank, step, JITTER_STREAM])
        r = rng if self.jitter else None
        plan = self.plan(step)
        recs, mixes, cyc, maps, id_target = [], [], [], [], []
        for x, y, z, flips in plan:
            (xc, xl), (yc, yl), (zc, zl) = self._photo(x, flips[0]), self._photo(y, flips[1]), self._photo(z, flips[2])
            # x from another photo of P; then x's person in z's pose
            recs.append(pair_inputs(xc, xl, yc[None], yl[None], rng=r, warp=self.warp, fixes=self.fixes))
            mix = pair_inputs(zc, zl, xc[None], xl[None], rng=r, warp=self.warp, fixes=self.fixes)
            mixes.append(mix)
            # reassembly: rest x (its own geometry); its identity input, the mixed image warped from the mixed
            # geometry back onto x's, is made in the trainer (it is a network output)
            cyc.append(rest_inputs(xc, xl, xl, rng=r))
            maps.append(warp_map(mix.geometry, xl, xc.shape[0]))
            id_target.append(yc)
        batch = {"x": _stack(recs, "rest"), "id_target": torch.from_numpy(to_input(np.stack(id_target)))}
        for tag, items in (("rec", recs), ("mix", mixes)):
            for key in ("content", "identity", "base", "rest"):
                batch[f"{tag}_{key}"] = _stack(items, key)
            batch[f"{tag}_mask"] = _stack(items, "mask")[:, None]
        if self.bank.emb is not None:  # the dlib encoder reads the photos' cached embeddings, not their pixels
            for tag, col in (("rec", 1), ("mix", 0)):  # rec: identity y; mix: identity x
                emb = [self.bank.emb[p[col], int(p[3][col])] for p in plan]
                batch[f"{tag}_identity"] = torch.from_numpy(np.stack(emb)[:, None])  # (B, 1, D)
        batch["cyc_content"] = torch.from_numpy(np.stack([c for c, _, _ in cyc]))
        batch["cyc_mask"] = torch.from_numpy(np.stack([m for _, m, _ in cyc]))[:, None]
        batch["cyc_map"] = torch.from_numpy(np.stack(maps))  # (B, S, S, 2) source pixel (x, y) of each target pixel
        return batch


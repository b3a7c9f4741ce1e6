"""Which (pose, identity) pairs ``g2g mix`` makes, and how a plan splits across processes.

Names. Poses are paths relative to POSES (posix). Identities follow ``g2g
prepare``'s rule: a photo in a subfolder of IDS belongs to the identity named
by that first folder (its K photos are averaged into one code); a photo directly
in IDS is its own identity, named by its file stem.

Modes (``--pairs``):
- ``all``: every pose with every identity (N x M).
- ``zip``: pose i (sorted) with identity i mod M: every pose once, identities cycle.
- ``by-name``: a pose goes with the identity named like its first folder
  (``POSES/<name>/...``) or, failing that, its file stem; unmatched poses are left out.
- ``random``: ``per_pose`` distinct identities per pose, drawn from a generator
  seeded by (seed, pose path): the draw of a pose does not change when other
  poses are added or removed.
- a CSV file with columns ``pose,identity`` (header optional), poses relative to
  POSES; rows run in file order, duplicates dropped.

The plan order is deterministic (sorted listings), and a pose's pairs stay
together, so a pose is encoded once per process and ``shard`` keeps them on
one process.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from pathlib import Path

from g2g.config import PAIR_MODES
from g2g.photos import identity_names
from g2g.errors import G2GError

MODES = PAIR_MODES


class PairingError(G2GError):
    """A plan that cannot be built (bad mode, CSV row, shard): a one-line user error."""


@dataclass
class Plan:
    poses: list[str]  # every pose image, relative to POSES, sorted
    identities: dict[str, list[str]]  # identity -> its source images relative to IDS, sorted
    pairs: list[tuple[str, str]]  # (pose, identity), grouped by pose, in run order
    mode: str = "all"
    notes: list[str] = field(default_factory=list)  # e.g. unmatched poses for by-name


def group_identities(rels: list[str]) -> dict[str, list[str]]:
    """Identity name -> its sources, both sorted."""
    names = identity_names(rels)
    out: dict[str, list[str]] = {}
    for r in sorted(rels):
        out.setdefault(names[r], []).append(r)
    return dict(sorted(out.items()))


def build_plan(poses: list[str], identities: dict[str, list[str]], pairs: str = "all",
               per_pose: int = 1, seed: int = 0) -> Plan:
    """The (pose, identity) pairs for ``pairs`` (a mode in :data:`MODES` or a CSV path)."""
    poses = sorted(poses)
    names = sorted(identities)
    notes: list[str] = []
    if not poses:
        raise PairingError("no pose images to pair")
    if not names:
        raise PairingError("no identities to pair")
    if pairs == "all":
        plan = [(p, n) for p in poses for n in names]
    elif pairs == "zip":
        plan = [(p, names[i % len(names)]) for i, p in enumerate(poses)]
        if len(poses) < len(names):
            notes.append(f"zip: {len(names) - len(poses)} identities have no pose (more identities than poses)")
    elif pairs == "by-name":
        known = set(names)
        plan = []
        for p in poses:
            parts = Path(p).parts
            cands = ([parts[0]] if len(parts) > 1 else []) + [Path(p).stem]
            match = next((c for c in cands if c in known), None)
            if match is not None:
                plan.append((p, match))
        if len(plan) < len(poses):
            notes.append(f"by-name: {len(poses) - len(plan)} of {len(poses)} poses match no identity name")
        if not plan:
            raise PairingError("--pairs by-name: no pose matches an identity name (pose folder or file stem)")
    elif pairs == "random":
        if per_pose < 1:
            raise PairingError(f"--per-pose must be at least 1, got {per_pose}", usage=True)
        k = min(per_pose, len(names))
        if per_pose > len(names):
            notes.append(f"random: --per-pose {per_pose} > {len(names)} identities; using {k}")
        order = {n: i for i, n in enumerate(names)}
        plan = []
        for p in poses:
            chosen = random.Random(f"{seed}/{p}").sample(names, k)
            plan += [(p, n) for n in sorted(chosen, key=order.__getitem__)]
    elif pairs.lower().endswith(".csv") or Path(pairs).is_file():
        plan = read_pairs_csv(Path(pairs), poses, names)
    else:
        raise PairingError(f"--pairs must be one of {', '.join(MODES)} or a pairs CSV file, got {pairs!r}", usage=True)
    return Plan(poses, identities, _group_by_pose(plan), pairs if pairs in MODES else "csv", notes)


def read_pairs_csv(path: Path, poses: list[str], names: list[str]) -> list[tuple[str, str]]:
    """Rows ``pose,identity`` -> pairs in file order (duplicates dropped); unknown names are errors."""
    if not path.is_file():
        raise PairingError(f"pairs file {path} does not exist")
    known_poses, known_ids = set(poses), set(names)
    out: dict[tuple[str, str], None] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        for i, row in enumerate(csv.reader(f), 1):
            row = [c.strip() for c in row]
            if not row or not any(row) or row[0].startswith("#"):
                continue
            if i == 1 and [c.lower() for c in row[:2]] == ["pose", "identity"]:
                continue
            if len(row) < 2:
                raise PairingError(f"{path}:{i}: expected 'pose,identity', got {','.join(row)!r}")
            pose, ident = Path(row[0]).as_posix(), row[1]
            if pose not in known_poses:
                raise PairingError(f"{path}:{i}: pose {pose!r} is not an image under POSES (paths are relative to it)")
            if ident not in known_ids:
                raise PairingError(f"{path}:{i}: identity {ident!r} is not in IDS")
            out[(pose, ident)] = None
    if not out:
        raise PairingError(f"{path} holds no pairs")
    return list(out)


def _group_by_pose(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Keep each pose's pairs together, poses in order of first appearance."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for pr in pairs:
        groups.setdefault(pr[0], []).append(pr)
    return [pr for g in groups.values() for pr in g]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (1-based, ``1/1`` = everything) -> (i, n)."""
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise PairingError(f"--shard must look like i/n (e.g. 2/8), got {text!r}", usage=True) from None
    if not (n >= 1 and 1 <= i <= n):
        raise PairingError(f"--shard {text}: need 1 <= i <= n", usage=True)
    return i, n


def shard(pairs: list[tuple[str, str]], i: int, n: int) -> list[tuple[str, str]]:
    """Shard ``i`` of ``n`` (1-based): contiguous, balanced by pair count, never splitting a pose.

    Deterministic: the union of shards 1..n is ``pairs`` in order, with no overlaps.
    A pose whose pairs start at index s goes to shard ``s * n // len(pairs) + 1``.
    """
    if not (n >= 1 and 1 <= i <= n):
        raise PairingError(f"shard {i}/{n}: need 1 <= i <= n", usage=True)
    total = len(pairs)
    out: list[tuple[str, str]] = []
    start, owner = 0, 1
    for k, pr in enumerate(pairs):
        if k == 0 or pr[0] != pairs[k - 1][0]:
            start = k
            owner = start * n // total + 1
        if owner == i:
            out.append(pr)
    return out

"""Classifier two-sample test (Lopez-Paz & Oquab, ICLR 2017) and the Fréchet distance, on feature arrays.

Two sets of images differ, as far as a feature space can tell, exactly as well as a
classifier trained to separate them does on images it has not seen. Here: a
standardised L2 logistic regression (balanced classes), cross-validated so that
no person or photo of a test row is in the training rows. The ROC AUC of its
out-of-fold scores is the result (0.5: the sets cannot be told apart; 1.0:
always), repeated over several fold splits.

A row may show more than one person: a mixed face has a pose photo (or its
person) and an identity. Each row carries its keys, the first one primary.
``StratifiedGroupKFold`` on the primary keys assigns every key a fold; in fold k
the test rows are those with *any* key in k and the training rows those with
*none*. A classifier that learnt a person from their real photos (class 0) would
otherwise score their mixes (class 1) as real, or learn a pose photo from its
other mixes; both are recognition, not realism. A row tested in two folds gets the
mean of its two scores.

The Fréchet distance compares the two sets' Gaussians. ~1000 features and a
few hundred faces give a singular covariance, so both sets are projected onto the
first principal components of a reference half of the real people's faces
(standardised on it); its control is the other real half against the same
reference, with the same number of images on both sides.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np

C_DEFAULT = 0.1  # inverse L2 strength of the logistic regression on standardised features
MAX_FOLDS = 5
FD_DIMS = 32  # principal components for the Fréchet distance (at most a third of the reference faces)

Keys = Sequence[Sequence[str]]  # per row: its people and photos, the primary one first


def as_keys(groups: Sequence[Any]) -> list[tuple[str, ...]]:
    """One group per row (``"alice"``) or several (``("photo:p1", "person:bob")``) -> tuples of strings."""
    return [tuple(str(k) for k in g) if isinstance(g, (tuple, list, set, frozenset)) else (str(g),) for g in groups]


def n_folds(y: np.ndarray, keys: Keys, max_folds: int = MAX_FOLDS) -> int:
    """Folds: ``max_folds`` or fewer when a class spans fewer primary keys (0: cannot cross-validate)."""
    per_class = [len({ks[0] for ks, c in zip(keys, y) if c == label}) for label in (0, 1)]
    k = min(max_folds, *per_class)
    return k if k >= 2 else 0


def key_folds(y: np.ndarray, keys: Keys, k: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(train, test) row indices of ``k`` folds in which no key of a test row is in a training row."""
    from sklearn.model_selection import StratifiedGroupKFold

    primary = np.array([ks[0] for ks in keys])
    fold_of: dict[str, int] = {}
    split = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, primary)
    for f, (_, test) in enumerate(split):
        fold_of.update((key, f) for key in primary[test])
    rng = np.random.default_rng(seed)
    for key in sorted({key for ks in keys for key in ks} - set(fold_of)):  # keys that are never primary
        fold_of[key] = int(rng.integers(k))
    member = np.array([[any(fold_of[key] == f for key in ks) for f in range(k)] for ks in keys])  # (N, k)
    for f in range(k):
        yield np.flatnonzero(~member[:, f]), np.flatnonzero(member[:, f])


def oof_scores(X: np.ndarray, y: np.ndarray, keys: Keys, seed: int, C: float = C_DEFAULT,
               folds: int = MAX_FOLDS) -> np.ndarray:
    """Out-of-fold P(class 1) of every row (:func:`key_folds` shuffled with ``seed``; 0.5 where never scored)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    k = n_folds(y, keys, folds)
    if not k:
        raise ValueError("each class needs at least 2 groups")
    total, count = np.zeros(len(y)), np.zeros(len(y))
    for train, test in key_folds(y, keys, k, seed):
        if len(test) == 0 or len(set(y[train])) < 2:  # a fold left a class out of training: no opinion
            continue
        # liblinear: ~5x faster than lbfgs at ~1000 features and a few hundred rows, same coefficients to 1e-3
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight="balanced", solver="liblinear",
                                                                 max_iter=1000))
        clf.fit(X[train], y[train])
        total[test] += clf.predict_proba(X[test])[:, 1]
        count[test] += 1
    return np.where(count > 0, total / np.maximum(count, 1), 0.5)


def c2st(X: np.ndarray, y: np.ndarray, groups: Sequence[Any], seeds: Sequence[int], C: float = C_DEFAULT
         ) -> dict[str, Any]:
    """AUC of class 1 vs class 0 over ``seeds`` fold splits; ``scores``: each row's out-of-fold P(1), seed mean.
    ``groups``: each row's group, or its keys (:func:`as_keys`)."""
    from sklearn.metrics import roc_auc_score

    X, y, keys = np.asarray(X, np.float64), np.asarray(y, np.int64), as_keys(groups)
    runs = [oof_scores(X, y, keys, s, C) for s in seeds]
    aucs = [float(roc_auc_score(y, s)) for s in runs]
    return {"auc": float(np.mean(aucs)), "auc_std": float(np.std(aucs)), "aucs": aucs,
            "folds": n_folds(y, keys), "scores": np.mean(runs, axis=0)}


def split_groups(groups: Sequence[Any], rng: np.random.Generator) -> np.ndarray:
    """Bool (N,): a random half of the distinct groups (people) True, the rest False."""
    groups = np.asarray([str(g) for g in groups])
    names = np.unique(groups)
    half = set(rng.permutation(names)[: len(names) // 2])
    return np.array([g in half for g in groups])


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to the rows of ``a`` and ``b`` (N, D)."""
    from scipy.linalg import sqrtm

    mu = a.mean(0) - b.mean(0)
    ca, cb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = sqrtm(ca @ cb)
    root = np.real(root) if np.iscomplexobj(root) else root
    return float(mu @ mu + np.trace(ca) + np.trace(cb) - 2 * np.trace(root))


def _project(ref: np.ndarray, dims: int) -> Any:
    """x -> its first ``dims`` principal components of ``ref``, after standardising on ``ref``."""
    mean, std = ref.mean(0), ref.std(0) + 1e-6
    z = (ref - mean) / std
    _, _, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
    basis = vt[:dims].T
    return lambda x: ((x - mean) / std) @ basis


def fd_test(fake: np.ndarray, real: np.ndarray, real_groups: Sequence[Any], seeds: Sequence[int],
            fake_people: Sequence[set[str]] | None = None, dims: int = FD_DIMS) -> dict[str, Any]:
    """FD(fakes, real half B) and its control FD(real half A, B), means over seeds.

    Per seed the real faces are split by person into A and B; B is the reference
    (standardisation and PCA are fitted on it). Fakes that show a person of B
    (``fake_people``: the people each fake is made from) are left out, as A holds
    no one of B either, and both sides are drawn to the same size: person and
    sample size then weigh the same on both sides.
    """
    fake, real = np.asarray(fake, np.float64), np.asarray(real, np.float64)
    groups = np.asarray([str(g) for g in real_groups])
    people = list(fake_people) if fake_people is not None else [set() for _ in range(len(fake))]
    fds, controls, sizes, used = [], [], [], []
    for s in seeds:
        rng = np.random.default_rng(s)
        in_a = split_groups(groups, rng)
        a, b, in_b = real[in_a], real[~in_a], set(groups[~in_a])
        free = np.array([i for i, p in enumerate(people) if not (p & in_b)], np.int64)
        n = min(len(a), len(free))
        if n < 4:
            continue
        d = max(1, min(dims, len(b) // 3, n // 3))
        proj = _project(b, d)
        fds.append(frechet(proj(fake[rng.choice(free, n, replace=False)]), proj(b)))
        controls.append(frechet(proj(a[rng.choice(len(a), n, replace=False)]), proj(b)))
        sizes.append(n)
        used.append(d)
    if not fds:
        return {"fd": None, "fd_std": None, "control": None, "control_std": None, "dims": None,
                "space": "too few mixed faces of people outside a real half"}
    return {"fd": float(np.mean(fds)), "fd_std": float(np.std(fds)), "control": float(np.mean(controls)),
            "control_std": float(np.std(controls)), "dims": int(min(used)),
            "space": f"first {min(used)}-{max(used)} principal components of half the real people's faces "
                     f"(standardised on them); {min(sizes)}-{max(sizes)} mixed faces of other people against them, "
                     "and as many real faces of the other half (the control)"}

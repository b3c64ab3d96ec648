"""Deterministic stratified subsets: ``n`` samples with the class proportions of the whole."""

from __future__ import annotations

import numpy as np


def stratified_indices(labels: np.ndarray, n: int, *, seed: int = 0) -> np.ndarray:
    """Indices of a random subset of ``n`` samples whose class counts are proportional to the whole.

    Class ``c`` with ``N_c`` of the ``N`` samples gets ``⌊n·N_c/N⌋`` places, and the places left go one each
    to the classes with the largest remainders ``n·N_c/N − ⌊n·N_c/N⌋`` (ties to the smaller class label), so
    every count is within one of ``n·N_c/N``. Within a class the samples are drawn uniformly, with NumPy's
    ``default_rng(seed)``; the same labels, ``n`` and ``seed`` always give the same subset.

    Args:
        labels: ``[N]`` integer class labels.
        n: the subset size, ``1 ≤ n ≤ N``.
        seed: the seed of the draw.

    Returns:
        ``[n]`` int64 indices into ``labels``, increasing (the subset keeps the original order).

    Raises:
        ValueError: ``n`` is not in ``1..N``.

    Example:
        >>> labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
        >>> np.bincount(labels[stratified_indices(labels, 4)])
        array([2, 1, 1])
    """
    total = len(labels)
    if not 1 <= n <= total:
        raise ValueError(f"n must be between 1 and the number of samples, {total}; got {n}")
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    # Integer arithmetic keeps the quotas exact: n·N_c = quota·N + remainder.
    quota, remainder = np.divmod(n * counts.astype(np.int64), total)
    # Largest remainders first; a stable sort breaks ties in favour of the smaller class label.
    order = np.argsort(-remainder, kind="stable")
    quota[order[: n - quota.sum()]] += 1

    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(inverse == k))[:q] for k, q in enumerate(quota)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)

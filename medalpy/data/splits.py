"""Class-balanced subsets, stratified train/validation splits and stratified k-fold.

The paper's protocol: training subsets keep the class distribution uniform; results are
averaged over 3 random train/validation splits; hyper-parameters are chosen by 10-fold
(MNIST) or 5-fold (CIFAR) cross-validation. Every function draws from
``np.random.default_rng(seed)`` created locally: the same seed gives the same indices.
"""

import numpy as np

from medalpy.errors import ConfigError


def _classes(labels):
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ConfigError(f"labels must be one-dimensional, got shape {labels.shape}")
    classes = np.unique(labels)
    return labels, classes


def _seed(seed):
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    return np.random.default_rng(int(seed))


def balanced_subset(labels, size, seed, *, exclude=None):
    """Indices of ``size`` samples with a uniform class distribution.

    Each class gets ``size // n_classes`` samples; the remainder ``size % n_classes`` goes one
    each to classes chosen by the seed. Drawn without replacement, never from ``exclude``.

    Parameters
    ----------
    labels : array_like, shape (N,)
    size : int
    seed : int
    exclude : array_like of int, optional
        Indices that must not be chosen (e.g. the validation set).

    Returns
    -------
    ndarray of int64, shape (size,)
        Sorted indices into ``labels``.

    Raises
    ------
    ConfigError
        ``size`` out of range, or a class has too few samples left.
    """
    labels, classes = _classes(labels)
    rng = _seed(seed)
    size = int(size)
    if size < 1:
        raise ConfigError(f"subset size must be positive, got {size}")
    allowed = np.ones(labels.shape[0], dtype=bool)
    if exclude is not None:
        allowed[np.asarray(exclude, dtype=np.int64)] = False
    k = len(classes)
    per_class = np.full(k, size // k, dtype=np.int64)
    per_class[rng.permutation(k)[: size % k]] += 1
    chosen = []
    for c, n in zip(classes, per_class):
        pool = np.flatnonzero((labels == c) & allowed)
        if pool.size < n:
            raise ConfigError(
                f"class {c} has {pool.size} samples available, a balanced subset of {size} "
                f"needs {n}"
            )
        chosen.append(rng.choice(pool, size=n, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def train_val_split(labels, n_val, seed):
    """Stratified random split into disjoint training and validation indices.

    The validation set has ``n_val`` samples in the class proportions of ``labels``
    (largest-remainder rounding, ties broken by the seed).

    Returns
    -------
    train_idx, val_idx : ndarray of int64
        Sorted, disjoint, together all of ``range(len(labels))``.
    """
    labels, classes = _classes(labels)
    rng = _seed(seed)
    n = labels.shape[0]
    n_val = int(n_val)
    if not 0 < n_val < n:
        raise ConfigError(f"validation size must be in 1..{n - 1}, got {n_val}")
    counts = np.array([(labels == c).sum() for c in classes])
    exact = counts * n_val / n
    take = np.floor(exact).astype(np.int64)
    short = n_val - take.sum()
    if short:
        frac = exact - take + rng.random(len(classes)) * 1e-9  # seeded tie-break
        take[np.argsort(-frac, kind="stable")[:short]] += 1
    val = []
    for c, t in zip(classes, take):
        pool = np.flatnonzero(labels == c)
        val.append(rng.choice(pool, size=t, replace=False))
    val_idx = np.sort(np.concatenate(val)).astype(np.int64)
    mask = np.ones(n, dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask).astype(np.int64), val_idx


def stratified_kfold(labels, k, seed):
    """Stratified k-fold: each sample is in exactly one validation fold.

    Each class is shuffled and dealt round-robin over the folds (starting at a fold that
    moves on from class to class), so fold sizes and class counts differ by at most one.

    Returns
    -------
    list of (train_idx, val_idx)
        ``k`` pairs of sorted int64 index arrays.
    """
    labels, classes = _classes(labels)
    rng = _seed(seed)
    k = int(k)
    if k < 2:
        raise ConfigError(f"k must be at least 2, got {k}")
    counts = [(labels == c).sum() for c in classes]
    if min(counts) < k:
        raise ConfigError(f"a class has {min(counts)} samples, fewer than k = {k} folds")
    fold_of = np.empty(labels.shape[0], dtype=np.int64)
    offset = 0
    for c in classes:
        idx = rng.permutation(np.flatnonzero(labels == c))
        fold_of[idx] = (np.arange(idx.size) + offset) % k
        offset += idx.size
    folds = []
    for f in range(k):
        val = np.flatnonzero(fold_of == f).astype(np.int64)
        train = np.flatnonzero(fold_of != f).astype(np.int64)
        folds.append((train, val))
    return folds

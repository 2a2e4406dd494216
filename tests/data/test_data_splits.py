"""Subsets are class-balanced and disjoint from validation; everything reproducible by seed."""

import numpy as np
import pytest

from medalpy.data.splits import balanced_subset, stratified_kfold, train_val_split
from medalpy.errors import ConfigError

LABELS = np.random.default_rng(7).permutation(np.repeat(np.arange(10), [60, 70, 55, 80, 65,
                                                                         50, 75, 61, 59, 90]))


@pytest.mark.parametrize("size", [10, 100, 257, 500])
def test_balanced_subset_uniform(size):
    idx = balanced_subset(LABELS, size, seed=3)
    counts = np.bincount(LABELS[idx], minlength=10)
    assert idx.size == size == np.unique(idx).size
    assert counts.max() - counts.min() <= 1 and counts.min() == size // 10


def test_subset_disjoint_from_validation_and_reproducible():
    train, val = train_val_split(LABELS, 100, seed=11)
    sub = balanced_subset(LABELS, 300, seed=5, exclude=val)
    assert np.intersect1d(sub, val).size == 0
    assert np.array_equal(sub, balanced_subset(LABELS, 300, seed=5, exclude=val))
    assert not np.array_equal(sub, balanced_subset(LABELS, 300, seed=6, exclude=val))


def test_subset_too_large_for_a_class():
    with pytest.raises(ConfigError, match="class 5 has 50 samples available"):
        balanced_subset(LABELS, 510, seed=0)


def test_train_val_split_stratified_disjoint_reproducible():
    train, val = train_val_split(LABELS, 130, seed=1)
    assert val.size == 130 and np.intersect1d(train, val).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(LABELS.size))
    expect = np.bincount(LABELS) * 130 / LABELS.size
    assert np.abs(np.bincount(LABELS[val]) - expect).max() < 1
    again = train_val_split(LABELS, 130, seed=1)
    assert np.array_equal(val, again[1]) and np.array_equal(train, again[0])
    assert not np.array_equal(val, train_val_split(LABELS, 130, seed=2)[1])


@pytest.mark.parametrize("k", [5, 10])
def test_stratified_kfold_partition(k):
    folds = stratified_kfold(LABELS, k, seed=4)
    vals = np.concatenate([v for _, v in folds])
    assert len(folds) == k and np.array_equal(np.sort(vals), np.arange(LABELS.size))
    for train, val in folds:
        assert np.intersect1d(train, val).size == 0 and train.size + val.size == LABELS.size
        expect = np.bincount(LABELS) / k
        assert np.abs(np.bincount(LABELS[val], minlength=10) - expect).max() < 1
    sizes = [v.size for _, v in folds]
    assert max(sizes) - min(sizes) <= 1
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, stratified_kfold(LABELS, k, 4)))


def test_bad_arguments():
    with pytest.raises(ConfigError):
        train_val_split(LABELS, 0, seed=0)
    with pytest.raises(ConfigError):
        stratified_kfold(LABELS, 1, seed=0)
    with pytest.raises(ConfigError, match="seed must be an integer"):
        balanced_subset(LABELS, 10, seed=1.5)

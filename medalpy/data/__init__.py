"""Datasets: canonical readers, name resolution, checked downloads, subsets and splits.

>>> from medalpy.data import load
>>> ds = load("mnist", data_dir="../shared/data")   # doctest: +SKIP
>>> ds.train_images.shape, ds.train_images.dtype, ds.source["kind"]   # doctest: +SKIP
((60000, 784), dtype('uint8'), 'full')

Readers never download; :mod:`medalpy.data.fetch` does, with checksums. Every problem with a
dataset file raises :class:`medalpy.errors.DataError` naming the file.
"""

from medalpy.data.datasets import (
    Dataset,
    SampleDataWarning,
    dataset_names,
    find,
    info,
    load,
    scale_batch,
    verify,
)
from medalpy.data.registry import DATASETS, get_spec

__all__ = [
    "DATASETS",
    "Dataset",
    "SampleDataWarning",
    "dataset_names",
    "find",
    "get_spec",
    "info",
    "load",
    "scale_batch",
    "verify",
]

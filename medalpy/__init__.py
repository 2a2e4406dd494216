"""medalpy: gradual and stacked training of deep denoising autoencoders.

A MEDAL-style port in NumPy + Numba of Kalmanovich & Chechik, "Gradual training of deep
denoising auto encoders" (ICLR 2015 workshop).

The library in a few names (see README, "From Python")::

    import medalpy

    ds = medalpy.load_dataset("mnist-sample")
    cfg = medalpy.make_config({"method": "gradual", "layers": [200, 100], "epochs_layer1": 3,
                               "budget": 3})
    trainer = medalpy.build_trainer(cfg, ds.train_images[:3000], ds.train_images[3000:])
    trainer.run()
    metrics = medalpy.reconstruction_metrics(trainer.backend, trainer.network,
                                             ds.test_images, cfg.noise)

Importing this package is cheap: each name below is imported on first use, and the Numba
kernels are compiled (or loaded from cache) only when a backend is first asked for.
"""

import importlib

__version__ = "0.1.0"

#: The public API: name -> the module that defines it.
_API = {
    # configuration and whole runs (what `medalpy train` does)
    "TrainConfig": "medalpy.run", "make_config": "medalpy.run",
    "build_trainer": "medalpy.run", "train": "medalpy.run",
    # the pieces: data, network, schedules, trainer, evaluation, classifiers
    "load_dataset": "medalpy.data", "Network": "medalpy.network",
    "build_schedule": "medalpy.schedules", "Phase": "medalpy.schedules",
    "Trainer": "medalpy.trainer", "Hyper": "medalpy.trainer",
    "get_backend": "medalpy.kernels",
    "reconstruction_metrics": "medalpy.evaluation",
    # what a trained network does, on host arrays
    "encode": "medalpy.api", "decode": "medalpy.api", "reconstruct": "medalpy.api",
    "evaluate": "medalpy.api", "predict_proba": "medalpy.api",
    "mean_image_relative_ce": "medalpy.evaluation",
    "train_classifier": "medalpy.supervised", "load_model": "medalpy.checkpoint",
    "PROTOCOLS": "medalpy.protocols",
    # the paper's experiments and the hyper-parameter search
    "run_experiment": "medalpy.experiments", "run_search": "medalpy.search",
    "SearchSpec": "medalpy.search",
}
#: Names that differ from the defining module's own.
_RENAMED = {"load_dataset": "load", "load_model": "load"}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name):
    if name not in _API:
        raise AttributeError(f"module 'medalpy' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__():
    return __all__

"""Supervised use of pretrained encoders: a classifier fine-tuned on a class-balanced subset.

A classifier is the encoders ``W_1..W_k`` of a pretrained DAE (or freshly initialised ones,
the baseline) plus a new randomly initialised softmax layer; every layer is trained with SGD
on the negative log-likelihood, with early stopping on validation error (the paper's patience
is 35 epochs), keeping the best parameters. The test error is reported.
"""

import numpy as np

from medalpy import settings
from medalpy.errors import ConfigError

#: The classifier's settings (keywords of :func:`train_classifier`) and their defaults,
#: declared in :data:`medalpy.settings.CLASSIFIER`.
CLASSIFIER_DEFAULTS = {s.name: s.default for s in settings.CLASSIFIER}

#: Classifier settings chosen by a search, by the pretraining preset (:data:`medalpy.run.PRESETS`)
#: whose encoders they were searched on: ``classify`` takes them for a model trained with that
#: preset, and an experiment with that preset for its classifiers; options given explicitly
#: still win, and the epochs and patience stay the command's or the scale's.
CLASSIFIER_PRESETS = {
    # The winner of benchmarks/searches/mnist-classifier.toml (docs/reproduction.md): 96
    # configurations on the paper-scale gradual encoders of the reproduction's split 0, a
    # labelled pool of 10,000 images, 5 nested folds, successive halving over three rungs.
    "paper-mnist": {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-5, "batch_size": 10,
                    "normalise_gradients": False},
}


def classifier_defaults(preset=None):
    """:data:`CLASSIFIER_DEFAULTS` with ``preset``'s searched settings over them (if any)."""
    return {**CLASSIFIER_DEFAULTS, **CLASSIFIER_PRESETS.get(preset, {})}


def check_classifier_settings(values, option_prefix=None):
    """Refuse unknown classifier settings and values out of range, naming the setting (as
    the command-line option ``--{option_prefix}name-with-dashes`` when a prefix is given)."""
    unknown = sorted(set(values) - set(CLASSIFIER_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown classifier setting(s) {', '.join(unknown)}; known: "
                          f"{', '.join(CLASSIFIER_DEFAULTS)}")
    for name, value in values.items():
        label = (f"classifier setting {name}" if option_prefix is None
                 else f"--{option_prefix}{name.replace('_', '-')}")
        settings.CLASSIFIER_SETTINGS[name].check(value, label=label)


def copy_encoders(network):
    """A new network holding trainable copies of ``network``'s encoders (heads dropped)."""
    from medalpy.network import Network

    net = Network(network.n_inputs, network.dtype)
    net.encoders = [type(layer)(layer.W.copy(), layer.b.copy(), True)
                    for layer in network.encoders]
    return net


def random_encoders(n_inputs, widths, seed, dtype="float32", init="medal"):
    """Freshly initialised encoders of the given widths (the random-initialisation baseline)."""
    from medalpy.network import Network

    net = Network(n_inputs, dtype)
    rng = np.random.default_rng([seed, 7])
    for w in widths:
        net.add_encoder(w, rng, init)
    return net


def train_classifier(backend, encoders, X_train, y_train, X_val, y_val, X_test, y_test,
                     n_classes, seed, callbacks=(), **settings):
    """Fine-tune ``encoders`` (a Network; copied, not modified) plus a softmax layer.

    ``settings`` are those of :data:`CLASSIFIER_DEFAULTS` (checked; the others take their
    defaults). ``X_test`` may be None (no test set: ``test_error`` is None).

    Returns
    -------
    dict with ``test_error``, ``val_error`` (the best, the start's included), ``kept_epoch``
    (0: the pretrained start), ``epochs_run``, ``history`` and the trained ``network``.
    """
    from medalpy.schedules import classifier_schedule
    from medalpy.trainer import Hyper, Trainer, classification_error
    from medalpy.backprop import Pass

    check_classifier_settings(settings)
    c = {**CLASSIFIER_DEFAULTS, **settings}
    if encoders.depth < 1:
        raise ConfigError("the classifier needs at least one pretrained encoder layer")
    net = copy_encoders(encoders)
    phases = classifier_schedule(net.depth, c["epochs"])
    hyper = Hyper.from_settings(c, noise=0.0)  # clean inputs: no corruption
    widths = [layer.n_out for layer in net.encoders]
    trainer = Trainer(backend, net, phases, hyper, X_train, X_val, widths, seed,
                      callbacks=callbacks, labels=(y_train, y_val), n_classes=n_classes)
    trainer.run()
    test_error = None
    if X_test is not None:
        net.place(backend.to_device)  # the trainer leaves it in host memory
        test_pass = Pass(backend, net.path(), 1000, net.head, net.dtype, train=False)
        test_error = classification_error(backend, test_pass, backend.to_device(X_test),
                                          y_test, net.dtype)
        net.place(backend.to_host)
    return {"test_error": test_error,
            "val_error": trainer.phase_log[-1]["best_val"],
            "kept_epoch": trainer.phase_log[-1]["kept_epoch"],
            "epochs_run": len(trainer.history), "history": trainer.history, "network": net}


def classification_data(ds, train_size, val_size, seed):
    """Class-balanced training subset and a disjoint stratified validation set.

    The validation set defaults to a fifth of the training subset's size (at least 100,
    at most a sixth of the training images), so small-data runs are not tuned on a
    validation set many times their own size.

    Returns
    -------
    (train_rows, val_rows) index arrays into ``ds.train_images``.
    """
    from medalpy.data.splits import balanced_subset, train_val_split

    N = ds.train_images.shape[0]
    if val_size is None:
        base = train_size if train_size is not None else N - N // 6
        val_size = min(max(base // 5, 100), N // 6)
    pool, val_rows = train_val_split(ds.train_labels, val_size, seed)
    if train_size is None:
        return pool, val_rows
    if train_size < ds.n_classes:
        raise ConfigError(f"train size {train_size} is smaller than the {ds.n_classes} classes "
                          "(a class-balanced subset needs one image of each)")
    if train_size > len(pool):
        raise ConfigError(f"train size {train_size} exceeds the {len(pool)} images left after "
                          "the validation split")
    pick = balanced_subset(ds.train_labels[pool], train_size, seed)
    return pool[np.sort(pick)], val_rows

"""scikit-learn estimators: a denoising autoencoder (a transformer) and a classifier on top.

``pip install medalpy[sklearn]``. Both are thin: the settings become a
:class:`medalpy.run.TrainConfig` (:meth:`DenoisingAutoencoder.to_config`), training is
:func:`medalpy.run.build_trainer` (what ``medalpy train`` runs), and transform, reconstruct
and score are :mod:`medalpy.api`. So, given the same training and validation images, settings
and seed, an estimator and ``medalpy train`` give the same weights.

Inputs are ``(n_samples, n_features)`` array-likes of floats in [0, 1], or uint8 images
(divided by 255). ``validation_fraction`` of the rows (a seeded random choice; stratified by
class for the classifier) is held out to choose each phase's best parameters; 0 holds out
nothing and keeps each phase's last epoch (MEDAL's own rule).

``schedule`` is ``"gradual"``, ``"stacked"``, ``"frozen_lower"`` or ``("hybrid", f)`` with
the stacked fraction f in [0, 1]; for :class:`DAEClassifier` also None (no pretraining: the
randomly initialised baseline).
"""

import contextlib
import math
import sys

import numpy as np
from sklearn.base import (BaseEstimator, ClassifierMixin, ClassNamePrefixFeaturesOutMixin,
                          TransformerMixin)
from sklearn.utils import check_array
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

from medalpy import api, settings
from medalpy.errors import MedalpyError
from medalpy.protocols import protocol_for

_TRAIN = settings.TRAIN_SETTINGS
_CLS = settings.CLASSIFIER_SETTINGS
_QUICK = {"epochs_layer1": 10, "budget": 10, "finetune_epochs": 0}  # medalpy.run.SCALES quick


@contextlib.contextmanager
def _value_errors():
    """medalpy's own errors about settings or inputs, as the ValueError scikit-learn expects."""
    try:
        yield
    except MedalpyError as exc:
        raise ValueError(str(exc)) from exc


def _check_images(estimator, X, reset):
    """X as an (n, d) uint8 or float array in [0, 1]; ValueError otherwise."""
    X = validate_data(estimator, X, reset=reset, dtype=[np.uint8, np.float64, np.float32],
                      ensure_min_samples=1)
    if X.dtype != np.uint8 and X.size and (X.min() < 0 or X.max() > 1):
        negative = "Negative values in data: " if X.min() < 0 else ""
        raise ValueError(f"{negative}X must hold values in [0, 1] (or uint8 images), found "
                         f"values in [{X.min():.4g}, {X.max():.4g}] (MinMaxScaler(clip=True) "
                         f"maps other data there)")
    return X


def validation_split(n, fraction, seed, y=None):
    """(train_rows, val_rows): ``ceil(fraction n)`` rows held out, chosen with ``seed``
    (stratified by ``y`` when given, as :func:`medalpy.data.splits.train_val_split`)."""
    from medalpy.data.splits import train_val_split

    n_val = math.ceil(fraction * n)
    if n_val == 0:
        return np.arange(n), np.arange(0)
    if n - n_val < 1:
        raise ValueError(f"validation_fraction {fraction} leaves no training sample of {n}")
    labels = np.zeros(n, dtype=np.int64) if y is None else y
    with _value_errors():
        return train_val_split(labels, n_val, seed)


def _method(schedule):
    """("method", fraction) of a schedule parameter."""
    if isinstance(schedule, (tuple, list)) and len(schedule) == 2 and schedule[0] == "hybrid":
        return "hybrid", schedule[1]
    if isinstance(schedule, str) and schedule != "hybrid":
        return schedule, None
    raise ValueError(f"schedule must be 'gradual', 'stacked', 'frozen_lower' or "
                     f"('hybrid', f), got {schedule!r}")


class _Pretrained(BaseEstimator):
    """What both estimators share: their pretraining settings as a TrainConfig, the seed,
    the progress printer."""

    def _seed(self):
        if isinstance(self.random_state, (int, np.integer)):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(0, 2**31 - 1))

    def _layers(self):
        return [int(w) for w in np.atleast_1d(self.hidden_layer_sizes)]

    def to_config(self, seed=None):
        """The :class:`medalpy.run.TrainConfig` these settings pretrain with (checked), as
        ``medalpy train`` would take it; ``seed`` defaults to an int ``random_state``."""
        from medalpy.run import make_config

        method, fraction = _method(self.schedule)
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got "
                             f"{self.validation_fraction!r}")
        seed = self._seed() if seed is None else seed
        with _value_errors():
            return make_config({
                "method": method, "fraction": fraction, "layers": self._layers(),
                "noise": self.noise, "noise_type": self.noise_type,
                "epochs_layer1": self.epochs_layer1, "budget": self.budget,
                "finetune_epochs": self.finetune_epochs, "lr": self.learning_rate,
                "batch_size": self.batch_size, "momentum": self.momentum,
                "weight_decay": self.weight_decay,
                "normalise_gradients": self.normalise_gradients,
                "keep": "best" if self.validation_fraction > 0 else "last",
                "seed": seed, "backend": self.backend, "dtype": self.dtype})

    def _callbacks(self):
        from medalpy.callbacks import ProgressPrinter

        return [ProgressPrinter(sys.stdout)] if self.verbose else []

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        return tags


def _store(estimator, params):
    """Keep every ``__init__`` parameter as an attribute of the same name, unchanged (what
    scikit-learn's get_params and clone read)."""
    for name, value in params.items():
        if name != "self" and not name.startswith("_"):
            setattr(estimator, name, value)


def _at_least_2(X):
    if X.shape[0] < 2:
        raise ValueError(f"needs at least 2 samples (training and validation), got "
                         f"{X.shape[0]} sample")


class DenoisingAutoencoder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, _Pretrained):
    """A deep denoising autoencoder trained layer by layer with a schedule.

    Parameters
    ----------
    schedule : "gradual" | "stacked" | "frozen_lower" | ("hybrid", f).
    hidden_layer_sizes : units of each encoder layer, bottom first.
    noise, noise_type : the corruption (masking noise 0.15: the paper's, for MNIST).
    epochs_layer1, budget, finetune_epochs : epochs of layer 1; gradual epochs per deeper
        layer (the equal budget); epochs of full tuning at the end.
    learning_rate, batch_size, momentum, weight_decay, normalise_gradients : SGD settings
        (medalpy's defaults: MEDAL's).
    validation_fraction : held-out fraction choosing each phase's best parameters.
    random_state : int, RandomState or None: the data split, initialisation, order and noise.
    backend : "cpu", "numpy" or "cuda". dtype : "float32" or "float64".
    verbose : print one line per epoch (the trainer's progress events).

    Attributes
    ----------
    coefs_, intercepts_ : encoder weights (n_in, n_out) and biases, bottom first.
    network_ : the trained :class:`medalpy.network.Network` (encoders and decoder).
    history_ : one record per epoch (losses, validation score, budget units).
    phase_log_ : one summary per phase. n_features_in_ : input width.
    """

    def __init__(self, schedule="gradual", hidden_layer_sizes=(1000, 1000),
                 noise=protocol_for("mnist").noise, noise_type=_TRAIN["noise_type"].default,
                 epochs_layer1=_QUICK["epochs_layer1"], budget=_QUICK["budget"],
                 finetune_epochs=_QUICK["finetune_epochs"],
                 learning_rate=_TRAIN["lr"].default, batch_size=_TRAIN["batch_size"].default,
                 momentum=_TRAIN["momentum"].default,
                 weight_decay=_TRAIN["weight_decay"].default,
                 normalise_gradients=_TRAIN["normalise_gradients"].default,
                 validation_fraction=0.1, random_state=None,
                 backend=_TRAIN["backend"].default, dtype=_TRAIN["dtype"].default,
                 verbose=False):
        _store(self, locals())

    # -- fit and use ---------------------------------------------------------------------

    def fit(self, X, y=None):
        """Train on the rows of X (y is ignored)."""
        from medalpy.run import build_trainer

        X = validate_data(self, X, dtype=[np.uint8, np.float64, np.float32])
        _at_least_2(X)
        X = _check_images(self, X, reset=False)
        seed = self._seed()
        cfg = self.to_config(seed)
        train, val = validation_split(X.shape[0], self.validation_fraction, seed)
        with _value_errors():
            trainer = build_trainer(cfg, X[train], X[val], callbacks=self._callbacks())
            trainer.run()
        self._set_fitted(trainer)
        return self

    def _set_fitted(self, trainer):
        self.network_ = trainer.network
        self.coefs_ = [layer.W for layer in trainer.network.encoders]
        self.intercepts_ = [layer.b for layer in trainer.network.encoders]
        self.history_ = trainer.history
        self.phase_log_ = trainer.phase_log
        self._n_features_out = trainer.network.width(trainer.network.depth)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = [np.dtype(self.dtype).name]  # codes' dtype
        return tags

    def transform(self, X):
        """The top codes (n_samples, hidden_layer_sizes[-1]) of the clean rows of X."""
        check_is_fitted(self)
        X = _check_images(self, X, reset=False)
        with _value_errors():
            return api.encode(self.network_, X, self.backend)

    def inverse_transform(self, X):
        """Reconstructions (n_samples, n_features_in_) of inputs whose top codes are X."""
        check_is_fitted(self)
        H = check_array(X, dtype=[np.float64, np.float32])
        with _value_errors():
            return api.decode(self.network_, H.astype(self.network_.dtype), self.backend)

    def reconstruct(self, X):
        """Reconstructions of the clean rows of X."""
        check_is_fitted(self)
        X = _check_images(self, X, reset=False)
        with _value_errors():
            return api.reconstruct(self.network_, X, backend=self.backend)

    def score(self, X, y=None):
        """Minus the relative cross-entropy (nats per image) of the reconstructions of X
        corrupted with the estimator's noise at a fixed seed: higher is better."""
        check_is_fitted(self)
        X = _check_images(self, X, reset=False)
        with _value_errors():
            return -api.evaluate(self.network_, X, self.noise, self.noise_type,
                                 self.backend)["relative_ce"]


class DAEClassifier(ClassifierMixin, _Pretrained):
    """A classifier whose encoders are pretrained as a denoising autoencoder (``schedule``;
    None for random initialisation), then fine-tuned with a softmax layer on the labels
    (early stopping on the held-out fraction's error, ``classifier_patience`` epochs).

    Parameters: those of :class:`DenoisingAutoencoder` for pretraining, and the classifier's
    settings (:data:`medalpy.settings.CLASSIFIER`) prefixed ``classifier_``.

    Attributes: ``classes_``, ``network_`` (encoders and softmax layer), ``history_`` (the
    fine-tuning's epochs), ``pretrain_history_``, ``coefs_``, ``intercepts_``.
    """

    def __init__(self, schedule="gradual", hidden_layer_sizes=(1000, 1000),
                 noise=protocol_for("mnist").noise, noise_type=_TRAIN["noise_type"].default,
                 epochs_layer1=_QUICK["epochs_layer1"], budget=_QUICK["budget"],
                 finetune_epochs=_QUICK["finetune_epochs"],
                 learning_rate=_TRAIN["lr"].default, batch_size=_TRAIN["batch_size"].default,
                 momentum=_TRAIN["momentum"].default,
                 weight_decay=_TRAIN["weight_decay"].default,
                 normalise_gradients=_TRAIN["normalise_gradients"].default,
                 classifier_epochs=_CLS["epochs"].default,
                 classifier_patience=_CLS["patience"].default,
                 classifier_learning_rate=_CLS["lr"].default,
                 classifier_momentum=_CLS["momentum"].default,
                 classifier_weight_decay=_CLS["weight_decay"].default,
                 classifier_batch_size=_CLS["batch_size"].default,
                 classifier_normalise_gradients=_CLS["normalise_gradients"].default,
                 validation_fraction=0.1, random_state=None,
                 backend=_TRAIN["backend"].default, dtype=_TRAIN["dtype"].default,
                 verbose=False):
        _store(self, locals())

    def _classifier_settings(self):
        return {"epochs": self.classifier_epochs, "patience": self.classifier_patience,
                "lr": self.classifier_learning_rate, "momentum": self.classifier_momentum,
                "weight_decay": self.classifier_weight_decay,
                "batch_size": self.classifier_batch_size,
                "normalise_gradients": self.classifier_normalise_gradients}

    def fit(self, X, y):
        """Pretrain on X (unless ``schedule`` is None), then fine-tune on (X, y)."""
        from sklearn.utils.multiclass import check_classification_targets

        from medalpy.kernels import get_backend
        from medalpy.run import build_trainer
        from medalpy.supervised import (check_classifier_settings, random_encoders,
                                        train_classifier)

        X, y = validate_data(self, X, y, dtype=[np.uint8, np.float64, np.float32])
        check_classification_targets(y)
        _at_least_2(X)
        X = _check_images(self, X, reset=False)
        self.classes_, codes = np.unique(y, return_inverse=True)
        seed = self._seed()
        with _value_errors():
            check_classifier_settings(self._classifier_settings(), option_prefix="classifier-")
        train, val = validation_split(X.shape[0], self.validation_fraction, seed,
                                      codes if self.validation_fraction > 0 else None)
        if len(val) == 0:
            raise ValueError("DAEClassifier needs validation_fraction > 0 (early stopping)")
        if self.schedule is None:
            encoders = random_encoders(X.shape[1], self._layers(), seed, self.dtype)
            self.pretrain_history_ = []
        else:
            cfg = self.to_config(seed)
            with _value_errors():
                pre = build_trainer(cfg, X[train], X[val], callbacks=self._callbacks())
                pre.run()
            encoders, self.pretrain_history_ = pre.network, pre.history
        with _value_errors():
            result = train_classifier(get_backend(self.backend), encoders, X[train],
                                      codes[train], X[val], codes[val], None, None,
                                      len(self.classes_), seed, self._callbacks(),
                                      **self._classifier_settings())
        net = result["network"]
        self.network_ = net
        self.coefs_ = [layer.W for layer in net.encoders] + [net.classifier.W]
        self.intercepts_ = [layer.b for layer in net.encoders] + [net.classifier.b]
        self.history_ = result["history"]
        return self

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes), columns in the order of classes_."""
        check_is_fitted(self)
        X = _check_images(self, X, reset=False)
        with _value_errors():
            return api.predict_proba(self.network_, X, self.backend)

    def predict(self, X):
        """The most probable class of each row of X."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

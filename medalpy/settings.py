"""Every setting, declared once: name, type, default, range, help text.

In the manner of scikit-learn's ``_parameter_constraints``, a :class:`Setting` says what a
value must be; everything else derives from the declarations here:

* :class:`medalpy.run.TrainConfig` (its fields and defaults) and its checks, for options,
  TOML files and per-phase tables alike;
* the command-line options of ``medalpy train`` (:func:`medalpy.cli._common.setting_options`),
  with the help texts below;
* the classifier's settings (:data:`CLASSIFIER`), for ``classify`` and ``experiment``;
* the checks of a search grid's values.

Defaults that depend on the dataset (the noise level) come from its protocol
(:mod:`medalpy.protocols`); those that depend on the scale (layers, epochs) from
:data:`medalpy.run.SCALES`. Choices that other modules own (schedules, backends, noise
kinds, scales, presets) are read from them when a value is checked.
"""

import importlib
import math
from dataclasses import dataclass

from medalpy.errors import ConfigError


def _positive(v):
    return v > 0


def _at_least_1(v):
    return v >= 1


def _not_negative(v):
    return v >= 0


def _probability(v):
    return 0 <= v < 1


@dataclass(frozen=True)
class Setting:
    """One setting.

    ``kind``: ``int``, ``float`` (finite), ``bool``, ``str`` or ``ints`` (a non-empty list of
    integers); ``optional``: None is allowed (not set); ``rule``: (predicate, description)
    of the allowed values; ``choices``: a tuple, or ``"module:NAME"`` naming the collection
    that owns them.
    """

    name: str
    kind: str
    default: object
    help: str
    rule: tuple = None
    choices: object = None
    optional: bool = False
    option: bool = True  # a command-line option of `medalpy train`

    def allowed(self):
        if isinstance(self.choices, str):
            module, name = self.choices.split(":")
            return tuple(getattr(importlib.import_module(module), name))
        return self.choices

    def check(self, value, where="", label=None):
        """Raise a ConfigError naming the setting (``where`` + its name, or ``label``) when
        ``value`` is not allowed."""
        label = label or f"{where}{self.name}"
        if value is None and self.optional:
            return
        if self.kind == "int":
            ok, what = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif self.kind == "float":
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
                  and math.isfinite(value))
            what = "a finite number"
        elif self.kind == "bool":
            ok, what = isinstance(value, bool), "true or false"
        elif self.kind == "ints":
            ok = (isinstance(value, (list, tuple)) and len(value) >= 1
                  and all(isinstance(v, int) and not isinstance(v, bool) for v in value))
            what = "a non-empty list of integers"
        else:
            ok, what = isinstance(value, str), "a string"
        if not ok:
            raise ConfigError(f"{label} must be {what}, got {value!r}")
        allowed = self.allowed()
        if allowed is not None and value not in allowed:
            raise ConfigError(f"{label} must be one of {', '.join(map(str, allowed))}, "
                              f"got {value!r}")
        if self.rule is not None:
            predicate, description = self.rule
            values = value if self.kind == "ints" else [value]
            if not all(predicate(v) for v in values):
                raise ConfigError(f"{label} must be {description}, got {value!r}")


def _s(*args, **kw):
    return Setting(*args, **kw)


#: The settings of a pretraining run, in the order ``TrainConfig`` lists them. A default of
#: None on a setting that is not optional is filled in by :func:`medalpy.run.make_config`:
#: the noise level from the dataset's protocol, the network and epochs from the scale.
TRAIN = (
    _s("dataset", "str", "mnist", "Dataset name (medalpy data list).", option=False),
    _s("method", "str", "gradual", "Schedule.", choices="medalpy.schedules:METHODS",
       option=False),
    _s("fraction", "float", None, "The hybrid's stacked fraction f.", (lambda v: 0 <= v <= 1,
       "in [0, 1]"), optional=True, option=False),
    _s("ablation_budget", "str", "updates", "--frozen-lower's equal budget: gradual's weight "
       "updates (k*budget epochs) or gradual's epochs (budget epochs).",
       choices="medalpy.schedules:ABLATION_BUDGETS"),
    _s("scale", "str", "quick", "quick: seconds on the bundled sample; medium: the paper's "
       "network, a fifth of its epochs; paper: the dataset's protocol (network, epochs, full "
       "tuning).", choices="medalpy.run:SCALES"),
    _s("preset", "str", "medal", "Optimiser settings: medal (MEDAL's defaults) or "
       "paper-mnist (lr 0.01, batch 10, momentum 0.9, decay 1e-5, no normGrad: searched on "
       "full MNIST, docs/search.md; --scale paper's default for MNIST).",
       choices="medalpy.run:PRESETS"),
    _s("layers", "ints", None, "Units per hidden layer, e.g. 1000,1000 (default: the scale's).",
       (_at_least_1, "positive")),
    _s("noise", "float", None, "Noise level (default: the dataset's protocol, 0.15 for MNIST): "
       "a probability, or the Gaussian's standard deviation."),
    _s("noise_type", "str", "masking", "Kind of corruption (masking is the paper's).",
       choices="medalpy.corruption:NOISE_TYPES"),
    _s("epochs_layer1", "int", None, "Epochs of phase 1 (default: the scale's).",
       (_at_least_1, "at least 1")),
    _s("budget", "int", None, "Gradual epochs per deeper phase; phase k costs k*budget units "
       "(default: the scale's).",
       (_not_negative, "not negative")),
    _s("finetune_epochs", "int", None, "Epochs of full tuning after pretraining (default: the "
       "scale's).",
       (_not_negative, "not negative")),
    _s("lower_lr", "str", None, "Multiplier m(t) on the lower layers' learning rate in gradual "
       "phases (gradual, hybrid): const:C, linear, cosine, exp:H or invtime:TAU (H, TAU in "
       "epochs); by depth: disc:F (F^-depth) or freezeout:T0 (lowest layers stop first).",
       optional=True),
    _s("eval_decoder", "str", "auto", "Decoder topology for evaluation (auto: the schedule's "
       "own).", choices="medalpy.schedules:EVAL_DECODERS"),
    _s("fit_decoder_epochs", "int", None, "Epochs of the decoder fitted for --eval-decoder "
       "(default: the budget).", (_at_least_1, "at least 1"), optional=True),
    _s("lr", "float", 0.1, "Learning rate.", (_positive, "positive")),
    _s("batch_size", "int", 20, "Minibatch size.", (_at_least_1, "at least 1")),
    _s("momentum", "float", 0.9, "Momentum.", (_probability, "in [0, 1)")),
    _s("weight_decay", "float", 1e-3, "L2 weight decay on weights (not biases).",
       (_not_negative, "not negative")),
    _s("normalise_gradients", "bool", True, "MEDAL's normGrad: scale each layer's gradient "
       "to unit norm."),
    _s("init", "str", "medal", "Weight initialisation.", choices="medalpy.network:INITIALISERS",
       option=False),
    _s("batch_order", "str", "shuffle", "Minibatch order: shuffle (a new permutation every "
       "epoch) or medal (MEDAL's fixed contiguous blocks).",
       choices="medalpy.trainer:BATCH_ORDERS"),
    _s("keep", "str", "best", "Parameters a phase ends with: best (on validation) or last "
       "(MEDAL's rule).", choices="medalpy.trainer:KEEPS"),
    _s("init_from", "str", None, "Start the layers the first phase creates from this model "
       "file's arrays of the same names (encoder.0, decoder).", optional=True),
    _s("patience", "int", None, "Stop a phase after this many epochs without validation "
       "improvement (off by default: budgets are spent in full).", (_at_least_1, "at least 1"),
       optional=True),
    _s("train_size", "int", None, "Class-balanced training subset size.",
       (_at_least_1, "at least 1"), optional=True),
    _s("val_size", "int", None, "Validation images (default: a sixth of the training images; "
       "0: none, with --keep last).", (_not_negative, "not negative"), optional=True),
    _s("seed", "int", 0, "Root random seed.", (_not_negative, "not negative")),
    _s("backend", "str", "cpu", "Kernel backend.", choices="medalpy.config:BACKENDS"),
    _s("dtype", "str", "float32", "Floating-point type.", choices=("float32", "float64")),
    _s("data_dir", "str", None, "Directory holding datasets.", optional=True, option=False),
    _s("grayscale", "bool", False, "Read colour datasets as grey levels.", option=False),
)

#: The classifier's settings (keywords of :func:`medalpy.supervised.train_classifier`).
CLASSIFIER = (
    _s("epochs", "int", 200, "Most epochs.", (_at_least_1, "at least 1")),
    _s("patience", "int", 35, "Stop after this many epochs without a better validation "
       "error (the paper's 35).", (_at_least_1, "at least 1")),
    _s("lr", "float", 0.1, "Learning rate.", (_positive, "positive")),
    _s("momentum", "float", 0.9, "Momentum.", (_probability, "in [0, 1)")),
    _s("weight_decay", "float", 1e-5, "L2 weight decay on weights (not biases).",
       (_not_negative, "not negative")),
    _s("batch_size", "int", 20, "Minibatch size.", (_at_least_1, "at least 1")),
    _s("normalise_gradients", "bool", False, "MEDAL's normGrad: each layer's gradient "
       "scaled to unit norm."),
)

TRAIN_SETTINGS = {s.name: s for s in TRAIN}
CLASSIFIER_SETTINGS = {s.name: s for s in CLASSIFIER}


def check(settings, values, where=""):
    """Check every value of ``values`` against ``settings`` ({name: Setting}); unknown names
    are refused, naming them and the known ones."""
    unknown = sorted(set(values) - set(settings))
    if unknown:
        raise ConfigError(f"{where}unknown setting(s) {', '.join(unknown)}; known: "
                          f"{', '.join(settings)}")
    for name, value in values.items():
        settings[name].check(value, where)

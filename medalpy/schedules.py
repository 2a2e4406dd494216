"""Training schedules as data: a schedule is a list of phases; the trainer only runs phases.

Every schedule starts with the same phase 1 (``x~ -> h_1 -> y``, loss ``CE(x, y)``). For each
deeper layer k = 2..K, with a budget of ``n`` gradual epochs (``k n`` budget units, one unit
being one epoch of updates to one encoder layer):

``stacked``
    ``k n`` epochs on the clean cached codes ``h_{k-1}``, corrupted there, reconstructing
    ``h_{k-1}``; only layer k and its decoder train. The decoder is kept for the mirror.
``gradual``
    ``n`` epochs of ``x~ -> h_1 -> ... -> h_k -> y``, loss ``CE(x, y)``; all k layers train.
``hybrid`` with fraction f
    a stacked part, then a gradual part of ``g = round(n (1 - f))`` epochs (halves rounded
    up) with a fresh direct decoder. The stacked part gets the rest of the budget, ``k (n - g)`` epochs, so every f
    spends exactly ``k n`` units (for k = 2 this is the paper's ``2 n f`` and ``n (1 - f)``).
``frozen_lower`` (the paper's ablation, "input noise, frozen lower layers")
    as gradual, but layers 1..k-1 frozen. "Equal budget" has two readings
    (``ablation_budget``): ``updates`` (the default) gives it the weight updates of gradual,
    one unit per epoch, so ``k n`` epochs; ``epochs`` gives it gradual's ``n`` epochs (and
    so ``n`` units).

Between the two extremes (the paper's open question): a gradual phase may carry a multiplier
m(t) on its lower layers' learning rate (:class:`LowerLR`, ``lower_lr``), t being the training
examples presented so far in the phase; m = 1 throughout is gradual, m = 0 throughout is the
ablation under its ``epochs`` reading (weights bit for bit). A lower layer updated at a reduced
rate still spends its budget unit: every such schedule spends what gradual spends.

Supervised use (:func:`classifier_schedule`): one ``supervised`` phase trains the encoders and
a fresh softmax layer on labels.

A schedule whose deeper phases are all stacked ends with codes only and is evaluated through
the mirror of its kept phase decoders; any other ends with a direct decoder to the input.

Optional tail phases: ``fit_decoder`` trains a fresh evaluation decoder of the topology the
schedule does not end with (encoders frozen, no budget units), and ``finetune`` trains all
encoders and the evaluation decoder jointly on ``x~ -> x`` (the paper's full tuning).
"""

import math
from dataclasses import asdict, dataclass, replace

from medalpy.errors import ConfigError

METHODS = ("stacked", "gradual", "hybrid", "frozen_lower")
#: Methods with a gradual phase, where ``lower_lr`` applies.
LOWER_LR_METHODS = ("gradual", "hybrid")
EVAL_DECODERS = ("auto", "direct", "mirror")
ABLATION_BUDGETS = ("updates", "epochs")


@dataclass(frozen=True)
class Phase:
    """One phase of a schedule.

    Attributes
    ----------
    name : str, unique within the schedule, e.g. ``"2:gradual"``.
    kind : ``layer1`` | ``stacked`` | ``gradual`` | ``frozen_lower`` | ``fit_decoder`` |
        ``finetune`` | ``supervised``.
    depth : int, number of encoder layers during the phase (a new one is added on top
        when the network has fewer).
    epochs : int.
    trainable : tuple of encoder indices updated by the phase.
    input_level : int, the level the chain starts at and where noise is injected:
        0 is the data; ``j`` is the clean cached code ``h_j``. The target is the clean
        version of the same input.
    decoder : ``new`` (a fresh direct decoder to ``h_input_level``), ``new_mirror`` (a fresh
        mirror stack), ``classifier`` (a fresh softmax layer; the phase is supervised) or
        ``current`` (the head left by the previous phase).
    keep_decoder : bool, keep the phase's decoder for the mirror when the phase ends.
    then_mirror : bool, make the kept decoders the network's head when the phase ends (the
        last phase of a schedule evaluated through the mirror).
    counted : bool, whether the phase's units count towards the pretraining budget.
    lower_lr : a :class:`LowerLR` spec for the lower layers (a gradual phase), or None (1).
    """

    name: str
    kind: str
    depth: int
    epochs: int
    trainable: tuple
    input_level: int
    decoder: str
    keep_decoder: bool = False
    then_mirror: bool = False
    counted: bool = True
    lower_lr: str = None

    @property
    def lower(self):
        """Indices of the encoders below the top that this phase trains."""
        return tuple(i for i in self.trainable if i < self.depth - 1)

    @property
    def units(self):
        """Budget units: epochs times the number of encoder layers updated."""
        return self.epochs * len(self.trainable)

    def to_dict(self):
        d = asdict(self)
        d["trainable"] = list(self.trainable)
        d["units"] = self.units
        if self.lower_lr is None:
            del d["lower_lr"]  # records of schedules without one stay as they were
        return d


@dataclass(frozen=True)
class LowerLR:
    """The multiplier m(t) on the lower layers' learning rate in a gradual phase of T training
    examples (N per epoch), t the examples presented before the current minibatch.

    ``const:c``   m = c, c in [0, 1]
    ``linear``    m = 1 - t / T
    ``cosine``    m = (1 + cos(pi t / T)) / 2
    ``exp:H``     m = 2^(-t / (H N)): a half-life of H epochs
    ``invtime:TAU`` m = 1 / (1 + t / (TAU N)), TAU in epochs

    Two depend on the layer's depth d below the phase's new layer (1 just below it, up to
    L, the number of lower layers):

    ``disc:F``    m = F^-d, F >= 1: ULMFiT's discriminative rates (Howard & Ruder 2018,
                  F = 2.6 there), constant in t
    ``freezeout:T0`` FreezeOut (Brock et al. 2017), lower layers first: m = (1 + cos(pi t /
                  (s_d T))) / 2 until t = s_d T, then 0, with s_d = T0 + (1 - T0) (L - d) / L
                  and T0 in (0, 1]: the lowest layer stops at T0 T, the others later
                  (from then on it takes no gradient; the momentum it had built up dies
                  away, by the momentum factor a step, as for any m = 0)
    """

    kind: str
    value: float = None

    KINDS = {"const": "c", "linear": None, "cosine": None, "exp": "H", "invtime": "TAU",
             "disc": "F", "freezeout": "T0"}

    @classmethod
    def parse(cls, spec):
        """A spec string (``const:0.5``, ``linear``, ``exp:2``...); ConfigError naming it
        when malformed or out of range."""
        kind, _, text = str(spec).partition(":")
        usage = ("lower_lr must be const:C (C in [0, 1]), linear, cosine, exp:H or "
                 "invtime:TAU (H, TAU in epochs, positive), disc:F (F >= 1) or freezeout:T0 "
                 f"(T0 in (0, 1]), got {spec!r}")
        if kind not in cls.KINDS or (cls.KINDS[kind] is None) != (text == ""):
            raise ConfigError(usage)
        if cls.KINDS[kind] is None:
            return cls(kind)
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(usage) from None
        ok = {"const": 0 <= value <= 1, "disc": value >= 1,
              "freezeout": 0 < value <= 1}.get(kind, value > 0)
        if not (ok and math.isfinite(value)):
            raise ConfigError(usage)
        return cls(kind, value)

    def multiplier(self, t, T, N, depth, lower):
        """m(t) of a layer ``depth`` levels below the new one, of ``lower`` lower layers."""
        if self.kind == "const":
            return self.value
        if self.kind == "linear":
            return 1.0 - t / T
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * t / T))
        if self.kind == "exp":
            return 2.0 ** (-t / (self.value * N))
        if self.kind == "invtime":
            return 1.0 / (1.0 + t / (self.value * N))
        if self.kind == "disc":
            return 1.0 / self.value ** depth
        stop = (self.value + (1.0 - self.value) * (lower - depth) / lower) * T
        return 0.5 * (1.0 + math.cos(math.pi * t / stop)) if t < stop else 0.0

    def mean(self, N, B, epochs, lower):
        """The phase's mean multiplier over its training examples (each minibatch of B
        counted at its m) and over its ``lower`` lower layers."""
        T, total = N * epochs, 0.0
        for depth in range(1, lower + 1):
            for epoch in range(epochs):
                for start in range(0, N, B):
                    total += (self.multiplier(epoch * N + start, T, N, depth, lower)
                              * min(B, N - start))
        return total / (T * lower)


def _stacked(k, epochs, keep):
    return Phase(f"{k}:stacked", "stacked", k, epochs, (k - 1,), k - 1, "new", keep_decoder=keep)


def _gradual(k, epochs):
    return Phase(f"{k}:gradual", "gradual", k, epochs, tuple(range(k)), 0, "new")


def build_schedule(method, n_layers, epochs_layer1, budget, fraction=None,
                   eval_decoder="auto", fit_decoder_epochs=None, finetune_epochs=0,
                   ablation_budget="updates", lower_lr=None):
    """The phase list of one schedule.

    Parameters
    ----------
    method : one of :data:`METHODS`.
    n_layers : int >= 1, encoder layers at the end.
    epochs_layer1 : int, epochs of phase 1.
    budget : int, ``n``: gradual epochs per deeper phase (``k n`` units for phase k).
    fraction : float in [0, 1], the hybrid's stacked fraction f (hybrid only).
    eval_decoder : ``auto`` (the schedule's own), ``direct`` or ``mirror``.
    fit_decoder_epochs : epochs of the ``fit_decoder`` phase added when ``eval_decoder``
        differs from the schedule's own (default: ``budget``).
    finetune_epochs : int, epochs of the full tuning phase (0: none).
    ablation_budget : ``updates`` (``k n`` epochs) or ``epochs`` (``n`` epochs): the frozen-lower
        ablation's reading of "equal budget".
    lower_lr : a :class:`LowerLR` spec for the lower layers of every gradual phase (gradual
        and the hybrid's gradual parts only), or None.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if (method == "hybrid") != (fraction is not None):
        raise ConfigError("a fraction is given with the hybrid method, and only with it")
    if fraction is not None and not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"hybrid fraction must be in [0, 1], got {fraction}")
    if eval_decoder not in EVAL_DECODERS:
        raise ConfigError(f"eval decoder must be one of {', '.join(EVAL_DECODERS)}")
    for label, value in (("layers", n_layers), ("epochs for layer 1", epochs_layer1)):
        if value < 1:
            raise ConfigError(f"{label} must be at least 1, got {value}")
    if ablation_budget not in ABLATION_BUDGETS:
        raise ConfigError(f"ablation budget must be one of {', '.join(ABLATION_BUDGETS)}, "
                          f"got {ablation_budget!r}")
    if budget < 0 or finetune_epochs < 0:
        raise ConfigError("budget and fine-tuning epochs must not be negative")
    if lower_lr is not None:
        if method not in LOWER_LR_METHODS:
            raise ConfigError(f"lower_lr is for the gradual phases of gradual and hybrid, not "
                              f"{method}")
        LowerLR.parse(lower_lr)

    # Epochs of each deeper phase's stacked and gradual parts. The hybrid rounds half up
    # (not to even) and gives the stacked part the rest of the budget.
    parts = {}
    for k in range(2, n_layers + 1):
        if method in ("stacked", "gradual"):
            parts[k] = (k * budget, 0) if method == "stacked" else (0, budget)
        elif method == "hybrid":
            gradual_epochs = math.floor(budget * (1.0 - fraction) + 0.5)
            parts[k] = (k * (budget - gradual_epochs), gradual_epochs)
    stacked_only = method == "stacked" or (method == "hybrid" and all(
        g == 0 for _, g in parts.values()) and (n_layers > 1 or fraction == 1.0))
    natural = "mirror" if stacked_only else "direct"
    wanted = natural if eval_decoder == "auto" else eval_decoder
    keep = natural == "mirror" and wanted == "mirror"
    phases = [Phase("1:layer", "layer1", 1, epochs_layer1, (0,), 0, "new", keep_decoder=keep)]
    for k in range(2, n_layers + 1):
        if method == "frozen_lower":
            epochs = k * budget if ablation_budget == "updates" else budget
            phases.append(Phase(f"{k}:frozen_lower", "frozen_lower", k, epochs, (k - 1,), 0,
                                "new"))
            continue
        stacked_epochs, gradual_epochs = parts[k]
        if stacked_epochs:
            phases.append(_stacked(k, stacked_epochs, keep))
        if gradual_epochs:
            phases.append(replace(_gradual(k, gradual_epochs), lower_lr=lower_lr))
    if keep:
        phases[-1] = replace(phases[-1], then_mirror=True)
    all_layers = tuple(range(n_layers))
    if wanted != natural:
        epochs = budget if fit_decoder_epochs is None else fit_decoder_epochs
        phases.append(Phase("fit_decoder", "fit_decoder", n_layers, epochs, (), 0,
                            "new" if wanted == "direct" else "new_mirror", counted=False))
    if finetune_epochs:
        phases.append(Phase("finetune", "finetune", n_layers, finetune_epochs, all_layers, 0,
                            "current", counted=False))
    return phases, wanted


def classifier_schedule(n_layers, epochs):
    """Supervised fine-tuning: a fresh softmax layer on the encoders, every layer trained."""
    return [Phase("classify", "supervised", n_layers, epochs, tuple(range(n_layers)), 0,
                  "classifier", counted=False)]


def budget_units(phases):
    """Units spent by the counted (pretraining) phases."""
    return sum(p.units for p in phases if p.counted)

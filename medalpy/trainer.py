"""The trainer: runs a schedule's phases -> epochs -> minibatches, and emits events.

It never prints, plots or writes files: callbacks receive events (``on_phase_start``,
``on_epoch_end``, ``on_phase_end``, ``on_run_end``) and turn them into progress bars, logs
and checkpoints.

Randomness is a pure function of the root seed and the position in the run, so a resumed run
is bit-identical to an uninterrupted one without saving any generator state. Every stream is
keyed ``[seed, TAG, ...]`` with its own non-zero tag in second place, so no two streams share
a seed sequence (NumPy pads keys with zeros: ``[s, p]`` and ``[s, p, 0]`` are the same):

* the minibatch order of epoch e of phase p: ``default_rng([seed, ORDER, p, e])`` (with
  ``batch_order="medal"``, MEDAL's fixed contiguous blocks instead, :func:`minibatches`);
* the new layers of phase p: ``default_rng([seed, INIT, p])``;
* the noise of training sample i in epoch e of phase p (of the phase's kind,
  :mod:`medalpy.corruption`) is keyed by
  ``(noise_seed(seed, NOISE, p), e, i)``; validation noise by
  ``(noise_seed(seed, VAL_NOISE), 0, i)``. (Data splits use ``default_rng(seed)``, tag 0.)

Every phase keeps the parameters that scored best on the validation set (loss for
reconstruction, classification error for a supervised phase) and restores them when it ends.
The parameters a phase starts from are scored before its first epoch and are a candidate too
(epoch 0), so no phase ends worse on validation than it began. With ``keep="last"`` (MEDAL's
own rule: it never restores a best network) a phase ends on its last epoch instead; only then
may the validation set be empty (no scores at all). With ``patience`` set, a phase
also stops once the validation loss has not improved for that many epochs (runs without a
budget); by default every phase spends all its epochs, so equal budgets stay equal.

When a phase ends, :attr:`Trainer.phase_log` gets one summary: the validation score at the
start and the best, the epoch kept (0: the start), and the paper's budget rule (the relative
improvement of the best-so-far validation score over the phase's last 10 epochs, which the
paper kept at or below 0.5%; ``None`` for phases shorter than 10 epochs).
"""

import math
import time
from dataclasses import dataclass, field

import numpy as np

from medalpy import cohort as cohorts
from medalpy import config
from medalpy.backprop import Pass, encode
from medalpy.corruption import corrupter, noise_type
from medalpy.errors import ConfigError, TrainingDiverged
from medalpy.network import new_layer
from medalpy.optim import SGD
from medalpy.schedules import LowerLR

#: Stream tags (see the module docstring).
ORDER, INIT, NOISE, VAL_NOISE = 1, 2, 3, 4
#: The paper's budget rule: over the last RULE_EPOCHS epochs of a phase, the best-so-far
#: validation score improved by at most RULE_TOLERANCE (relative).
RULE_EPOCHS, RULE_TOLERANCE = 10, 0.005
#: Minibatch orders (:func:`minibatches`) and which parameters a phase ends with.
BATCH_ORDERS = ("shuffle", "medal")
KEEPS = ("best", "last")


def minibatches(batch_order, N, B, seed, p, epoch):
    """The row indices of each minibatch of epoch ``epoch`` of phase ``p``, in order.

    ``shuffle``: a fresh permutation of the N rows (``default_rng([seed, ORDER, p, epoch])``)
    cut into batches of B, the last one shorter. ``medal``: MEDAL's order, the same every
    epoch: ``ceil(N / B)`` contiguous blocks cut at MATLAB's ``round(linspace(1, N + 1,
    nB + 1))`` (halves rounded away from zero), so blocks differ in size by at most one.
    """
    if batch_order == "medal":
        n_batches = -(-N // B)
        edges = np.floor(np.linspace(1, N + 1, n_batches + 1) + 0.5).astype(np.int64) - 1
        return [np.arange(a, b) for a, b in zip(edges[:-1], edges[1:])]
    order = np.random.default_rng([seed, ORDER, p, epoch]).permutation(N)
    return [order[start:start + B] for start in range(0, N, B)]


def noise_seed(seed, *key):
    """A 63-bit seed for the noise hash, from the root seed and a stream key."""
    return int(np.random.SeedSequence([seed, *key]).generate_state(1, np.uint64)[0] >> 1)


@dataclass
class Hyper:
    """Optimisation settings of a phase.

    ``overrides`` maps a phase name (``"2:gradual"``) or kind (``"finetune"``) to a dict of
    the fields to change for that phase, e.g. ``{"finetune": {"lr": 0.01}}``.
    """

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-3
    normalise_gradients: bool = True
    batch_size: int = 20
    noise: float = 0.15
    noise_type: str = "masking"
    patience: int = None
    batch_order: str = "shuffle"
    keep: str = "best"
    init: str = "medal"
    overrides: dict = field(default_factory=dict)

    FIELDS = ("lr", "momentum", "weight_decay", "normalise_gradients", "batch_size", "noise",
              "noise_type", "patience", "batch_order", "keep")

    @classmethod
    def from_settings(cls, settings, **changes):
        """A Hyper from any mapping that holds (some of) its field names, such as a
        TrainConfig's dict or a cell's parameters; other keys are ignored."""
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in {**settings, **changes}.items() if k in names})

    def for_phase(self, phase):
        values = {name: getattr(self, name) for name in self.FIELDS}
        for key in (phase.kind, phase.name):
            for name, value in self.overrides.get(key, {}).items():
                if name not in self.FIELDS:
                    raise ConfigError(f"unknown per-phase setting {name!r} for {key!r}")
                values[name] = value
        return values


@dataclass
class Position:
    """Where a run stands: the phase, and the last epoch finished in it (-1: none yet)."""

    phase: int = 0
    epoch: int = -1
    stopped: bool = False  # the phase ended early (patience)


class Trainer:
    """Run a schedule on a network.

    Parameters
    ----------
    backend : kernel module.
    network : :class:`medalpy.network.Network` (modified in place).
    phases : list of :class:`medalpy.schedules.Phase`.
    hyper : :class:`Hyper`.
    X_train, X_val : (N, D) uint8 (or float in [0, 1]) arrays of training/validation inputs.
    widths : list of int, units of encoder layers 1..K (used when a phase adds a layer).
    seed : int, the root seed.
    callbacks : objects with any of the ``on_*`` methods.
    labels : optional (y_train, y_val) int arrays, for supervised phases.
    n_classes : int, classes of a supervised phase's softmax layer.
    initial : optional {array name: array} (``encoder.0.W``, ``decoder.b``...): the layers the
        first phase creates start from these arrays instead of fresh ones (MEDAL's given
        initial weights, or a model's); a layer needs both its ``W`` and ``b``.
    """

    def __init__(self, backend, network, phases, hyper, X_train, X_val, widths, seed,
                 callbacks=(), labels=None, n_classes=None, initial=None):
        self.backend = backend
        self.network = network
        self.phases = list(phases)
        self.hyper = hyper
        self.X_train, self.X_val = X_train, X_val
        self.widths = list(widths)
        self.labels, self.n_classes = labels, n_classes
        if any(p.kind == "supervised" for p in self.phases) and (labels is None or not n_classes):
            raise ConfigError("a supervised phase needs labels and n_classes")
        if len(self.widths) < max(phase.depth for phase in self.phases):
            raise ConfigError("the schedule is deeper than the list of layer widths")
        self.seed = int(seed)
        self.callbacks = list(callbacks)
        self.position = Position()
        self.optimiser = None
        self.best = None  # {"val": float, "epoch": int (-1: the start), "params": {...}}
        self.history = []
        self.phase_log = []  # one summary per finished phase (see the module docstring)
        self.start_val = None  # validation score of the current phase's starting parameters
        self.units_spent = 0
        self.initial = dict(initial or {})
        if X_val.shape[0] == 0:
            for phase in self.phases:
                settings = hyper.for_phase(phase)
                if settings["keep"] != "last" or settings["patience"] is not None:
                    raise ConfigError(f"phase {phase.name}: without validation images a phase "
                                      "must keep its last epoch (keep = last) and cannot stop "
                                      "early (patience)")

    # -- state ---------------------------------------------------------------------------

    def state(self):
        """Everything a resumed run needs, on the host: ``position``, ``units_spent``,
        ``history``, ``phase_log``, ``start_val``, ``best`` (or None) and the optimiser's
        ``velocity`` ({name: array})."""
        velocity = self.optimiser.velocity.items() if self.optimiser else ()
        return {"position": self.position, "units_spent": self.units_spent,
                "history": self.history, "phase_log": self.phase_log,
                "start_val": self.start_val, "best": self.best,
                "velocity": {name: self.backend.to_host(v) for name, v in velocity}}

    def restore(self, state):
        """Continue from a :meth:`state` (of a trainer built on the same network, schedule
        and settings): the next :meth:`run` resumes exactly where that one stood."""
        self.position = state["position"]
        self.units_spent = state["units_spent"]
        self.history = list(state["history"])
        self.phase_log = list(state["phase_log"])
        self.start_val = state["start_val"]
        self.best = state["best"]
        self.optimiser = self._new_optimiser(
            self.hyper.for_phase(self.phases[self.position.phase]),
            {k: self.backend.to_device(v) for k, v in state["velocity"].items()})

    def start_at(self, phase):
        """Begin the next :meth:`run` at phase index ``phase``, as if the phases before it had
        run (their budget units are counted); the network must already hold their result."""
        self.position = Position(phase, -1)
        self.units_spent = sum(p.units for p in self.phases[:phase] if p.counted)

    # -- events --------------------------------------------------------------------------

    def _emit(self, event, *args):
        for cb in self.callbacks:
            handler = getattr(cb, event, None)
            if handler is not None:
                handler(self, *args)

    # -- the run -------------------------------------------------------------------------

    def run(self):
        """Run from :attr:`position` to the end of the schedule; returns the history."""
        with self.backend.session():
            self._run()
        return self.history

    def _run(self):
        while self.position.phase < len(self.phases):
            p = self.position.phase
            phase = self.phases[p]
            settings = self.hyper.for_phase(phase)
            fresh = self.position.epoch < 0
            if fresh:
                self._begin_phase(p, phase, settings)
            self._emit("on_phase_start", p, phase)
            self._train_phase(p, phase, settings)
            self._finish_phase(phase)
            self._emit("on_phase_end", p, phase)
            self.position = Position(p + 1, -1)
        self._emit("on_run_end")

    def _begin_phase(self, p, phase, settings):
        """A fresh phase: its layers built, a new optimiser, no best parameters yet."""
        self._build(p, phase)
        self.optimiser = self._new_optimiser(settings)
        self.best = None

    @staticmethod
    def _new_optimiser(settings, velocity=None):
        return SGD(settings["lr"], settings["momentum"], settings["weight_decay"],
                   settings["normalise_gradients"], velocity=velocity or {})

    def _set_trainable(self, phase):
        for i, layer in enumerate(self.network.encoders):
            layer.trainable = i in phase.trainable

    def _build(self, p, phase):
        """Change the network's structure as the phase asks (fresh layers seeded by p)."""
        net = self.network
        existing = list(net.layers().values())  # held, so that no new layer reuses an id
        self._build_layers(p, phase)
        if p == 0 and self.initial:
            for name, layer in net.layers().items():
                if all(layer is not old for old in existing) and f"{name}.W" in self.initial:
                    self._set_initial(name, layer)

    def _set_initial(self, name, layer):
        for part in ("W", "b"):
            if f"{name}.{part}" not in self.initial:
                raise ConfigError(f"initial arrays: {name}.W is given but not {name}.b")
            given = np.asarray(self.initial[f"{name}.{part}"])
            target = getattr(layer, part)
            if given.shape != target.shape:
                raise ConfigError(f"initial {name}.{part} is {given.shape}, but this run's "
                                  f"{name}.{part} is {target.shape}")
            target[...] = given

    def _build_layers(self, p, phase):
        net = self.network
        rng = np.random.default_rng([self.seed, INIT, p])
        while net.depth < phase.depth:
            net.add_encoder(self.widths[net.depth], rng, self.hyper.init)
        if phase.decoder in ("new", "new_mirror", "classifier"):
            net.discard_head()
        if phase.decoder == "new":
            net.attach_decoder(rng, target_level=phase.input_level, init=self.hyper.init)
        elif phase.decoder == "new_mirror":
            net.discard_mirror()
            for i in range(net.depth):
                net.mirror[i] = new_layer(net.width(i + 1), net.width(i), rng, net.dtype,
                                          self.hyper.init)
            net.use_mirror()
        elif phase.decoder == "classifier":
            net.attach_classifier(self.n_classes, rng, init=self.hyper.init)

    def prepare(self, p):
        """Phase ``p`` as :meth:`run` starts it: the layers and heads of the phases up to it
        built, a new optimiser, its data and workspaces on the backend. Returns its
        :class:`PhaseRun`, whose ``step`` is the training step the trainer takes (what
        ``medalpy bench`` times)."""
        for q in range(p):
            self._build(q, self.phases[q])
        phase, settings = self.phases[p], self.hyper.for_phase(self.phases[p])
        self.start_at(p)
        self._begin_phase(p, phase, settings)
        self._set_trainable(phase)
        return PhaseRun(self, p, phase, settings)

    def _train_phase(self, p, phase, settings):
        self._set_trainable(phase)
        if self.position.stopped or self.position.epoch + 1 >= phase.epochs:
            return
        run = PhaseRun(self, p, phase, settings)
        # Divergence is detected from the loss itself; NumPy's floating-point warnings on
        # the way there would only add noise to the message.
        with np.errstate(over="ignore", invalid="ignore"):
            if self.best is None and run.val_source.shape[0]:
                # a fresh phase: its start is the first candidate
                self.start_val = self._score(phase, settings, run)
                self.best = {"val": self.start_val, "epoch": -1,
                             "params": self._snapshot(phase)}
            self._epochs(p, phase, settings, run)

    def _score(self, phase, settings, run):
        """The phase's validation score (lower is better) of the current parameters."""
        if phase.kind == "supervised":
            val = self._validation_error(run.val_pass, run.val_source)
        else:
            val = self._validation_loss(run.val_pass, run.val_source, settings["noise"],
                                        settings["noise_type"])
        if not math.isfinite(val):
            raise TrainingDiverged(f"validation loss became {val} in phase {phase.name}")
        return val

    def _epochs(self, p, phase, settings, run):
        """Epochs of minibatches from :attr:`position` to the phase's end (or early stop)."""
        B, N = settings["batch_size"], run.source.shape[0]
        lower = LowerLR.parse(phase.lower_lr) if phase.lower_lr else None
        for epoch in range(self.position.epoch + 1, phase.epochs):
            t0 = time.perf_counter()
            batches = minibatches(settings["batch_order"], N, B, self.seed, p, epoch)
            scales = None
            if lower is not None:  # m(t) at the examples presented before each batch
                seen = epoch * N + np.cumsum([0] + [len(rows) for rows in batches[:-1]])
                scales = [{f"encoder.{i}": lower.multiplier(int(t), phase.epochs * N, N,
                                                            phase.depth - 1 - i,
                                                            len(phase.lower))
                           for i in phase.lower} for t in seen]
            cohort = cohorts.current.get()
            if cohort is not None:  # trained with other cells (medalpy.cohort)
                total = cohort.epoch(run, batches, epoch, self.optimiser, scales)
            else:
                total = run.epoch(batches, epoch, self.optimiser, scales)
            if not math.isfinite(total):
                raise TrainingDiverged(
                    f"loss became {total} in phase {phase.name}, epoch {epoch + 1}; "
                    "lower the learning rate")
            val, improved = None, False
            if self.best is not None:  # None: no validation images
                val = self._score(phase, settings, run)
                improved = val < self.best["val"]
                if improved:
                    self.best = {"val": val, "epoch": epoch, "params": self._snapshot(phase)}
            if phase.counted:
                self.units_spent += len(phase.trainable)
            record = {
                "phase": phase.name, "phase_index": p, "epoch": epoch + 1,
                "epochs": phase.epochs, "train_loss": total / N, "val_loss": val,
                "best_val_loss": self.best and self.best["val"], "improved": improved,
                "units_spent": self.units_spent, "seconds": time.perf_counter() - t0,
            }
            self.history.append(record)
            patience = settings["patience"]
            stopped = (patience is not None and self.best is not None
                       and epoch - self.best["epoch"] >= patience)
            self.position = Position(p, epoch, stopped)
            self._emit("on_epoch_end", record)
            if stopped:
                break

    def _validation_loss(self, val_pass, val_source, rate, noise_type="masking"):
        """Mean loss on the validation set, corrupted by a fixed noise stream."""
        k, N = self.backend, val_source.shape[0]
        corrupt = corrupter(k, noise_type)
        width = val_source.shape[1]
        X_in = k.empty((config.EVAL_BATCH, width), self.network.dtype)
        X_target = k.empty((config.EVAL_BATCH, width), self.network.dtype)
        seed_v = noise_seed(self.seed, VAL_NOISE)
        total = 0.0
        for start in range(0, N, config.EVAL_BATCH):
            rows = np.arange(start, min(start + config.EVAL_BATCH, N))
            n = len(rows)
            corrupt(val_source, rows, rate, seed_v, 0, X_in[:n])
            k.gather(val_source, rows, X_target[:n])
            total += val_pass.loss(X_in[:n], X_target[:n]) * n
        return total / N

    def _validation_error(self, val_pass, val_source):
        """Fraction of validation images the classifier gets wrong (clean inputs)."""
        return classification_error(self.backend, val_pass, val_source, self.labels[1],
                                    self.network.dtype)

    def _snapshot(self, phase):
        """Copies of the arrays the phase trains (its encoders and its head)."""
        trained = {f"encoder.{i}" for i in phase.trainable}
        trained |= {name for name, _ in self.network.path(phase.input_level)
                    if not name.startswith("encoder.")}
        return {name: np.array(self.backend.to_host(array), copy=True)
                for name, array in self.network.parameters().items()
                if name.rsplit(".", 1)[0] in trained}

    def _summary(self, p, phase):
        """The finished phase's summary for :attr:`phase_log` (see the module docstring)."""
        best_so_far = [r["best_val_loss"] for r in self.history if r["phase_index"] == p]
        keep_last = self.hyper.for_phase(phase)["keep"] == "last"
        kept = len(best_so_far) if keep_last else self.best["epoch"] + 1 if self.best else None
        summary = {"phase": phase.name, "epochs_run": len(best_so_far),
                   "start_val": self.start_val,
                   "best_val": self.best["val"] if self.best else None,
                   "kept_epoch": kept, "last10_improvement": None, "budget_rule": None}
        if phase.lower_lr:
            summary["lower_lr"] = phase.lower_lr
            summary["mean_multiplier"] = LowerLR.parse(phase.lower_lr).mean(
                self.X_train.shape[0], self.hyper.for_phase(phase)["batch_size"], phase.epochs,
                len(phase.lower))
        if self.best is not None and len(best_so_far) >= RULE_EPOCHS:
            before = ([self.start_val] + best_so_far)[-RULE_EPOCHS - 1]
            gain = (before - best_so_far[-1]) / abs(before) if before else 0.0
            summary.update(last10_improvement=gain, budget_rule=bool(gain <= RULE_TOLERANCE))
        return summary

    def _finish_phase(self, phase):
        """Restore the best parameters; keep or discard the phase's decoder."""
        net = self.network
        net.place(self.backend.to_host)
        self.phase_log.append(self._summary(self.position.phase, phase))
        if self.best is not None and self.hyper.for_phase(phase)["keep"] == "best":
            params = net.parameters()
            for name, array in self.best["params"].items():
                params[name][...] = array
        if phase.keep_decoder:
            net.keep_decoder_as_mirror()
        elif net.head == "decoder" and net.decoder_target != 0:
            net.discard_head()  # a decoder to codes serves only the phase that trained it
        if phase.then_mirror:
            self.network.use_mirror()
        self.best = None
        self.start_val = None


class PhaseRun:
    """One phase's data, passes and workspaces on the backend, and its training step.

    For a whole phase, weights and data stay where the backend computes (they come back to
    the host when the phase ends; callbacks read them through ``to_host`` meanwhile). A
    stacked phase's input is the clean codes of the frozen layers below, computed once here.
    """

    def __init__(self, trainer, p, phase, settings):
        net, k = trainer.network, trainer.backend
        self.backend = k
        net.place(k.to_device)
        if phase.input_level == 0:
            self.source = k.to_device(trainer.X_train)
            self.val_source = k.to_device(trainer.X_val)
        else:
            below = net.encoders[:phase.input_level]
            self.source = encode(k, below, trainer.X_train)
            self.val_source = encode(k, below, trainer.X_val)
        chain = net.path(phase.input_level)
        self.train_pass = Pass(k, chain, settings["batch_size"], net.head, net.dtype)
        self.val_pass = Pass(k, chain, config.EVAL_BATCH, net.head, net.dtype, train=False)
        B, width = settings["batch_size"], self.source.shape[1]
        self.X_in = k.empty((B, width), net.dtype)
        self.X_target = k.empty((B, width), net.dtype)
        self.rate, self.seed = settings["noise"], noise_seed(trainer.seed, NOISE, p)
        self.noise_kernel = noise_type(settings["noise_type"]).kernel
        self.corrupt = getattr(k, self.noise_kernel)
        self.labels = trainer.labels[0] if phase.kind == "supervised" else None
        # A backend that can run whole epochs on its device without per-step host work
        # (cuda: medalpy.kernels.cuda_step) does so, unless told to step from the host.
        self.device = None
        if getattr(k, "DeviceStep", None) is not None and config.CUDA_STEP != "host":
            self.device = k.DeviceStep(self.train_pass, self.source, self.X_in, self.X_target,
                                       self.labels, self.noise_kernel, self.rate, self.seed)

    def signature(self, batches, optimiser):
        """What must be equal for phases of several networks to share one batched step
        (:mod:`medalpy.cohort`): everything but the data, the rows' order, the noise stream,
        the learning rate and the parameters."""
        p = self.train_pass
        return (self.backend.NAME, p.dtype.str, self.source.shape, self.source.dtype.str,
                tuple(p.names),
                tuple((layer.n_in, layer.n_out, layer.trainable) for layer in p.layers),
                p.objective.name, p.batch_size, tuple(len(rows) for rows in batches),
                self.noise_kernel, self.rate, self.labels is not None,
                optimiser.normalise_gradients, optimiser.momentum, optimiser.weight_decay)

    def epoch(self, batches, epoch, optimiser, scales=None):
        """One epoch: a :meth:`step` on each batch of ``batches`` (row indices), in order.

        ``scales``: optional per-batch ``{layer name: learning-rate multiplier}``, set as the
        optimiser's ``lr_scale`` before the batch's step. Returns the sum over rows of the
        batch losses, or the first non-finite batch loss (the caller stops there).
        """
        if self.device is not None:
            return self.device.epoch(batches, epoch, optimiser, scales)
        total = 0.0
        for b, rows in enumerate(batches):
            if scales is not None:
                optimiser.lr_scale = scales[b]
            loss = self.step(rows, epoch, optimiser)
            if not math.isfinite(loss):
                return loss
            total += loss * len(rows)
        return total

    def step(self, rows, epoch, optimiser):
        """One SGD step on the samples ``rows`` in epoch ``epoch``: the batch gathered and
        corrupted, forward, loss, backward and update (``Pass.train_step``); returns the
        batch's mean loss."""
        n = len(rows)
        self.corrupt(self.source, rows, self.rate, self.seed, epoch, self.X_in[:n])
        if self.labels is not None:
            target = self.labels[rows]
        else:
            target = self.X_target[:n]
            self.backend.gather(self.source, rows, target)
        return self.train_pass.train_step(self.X_in[:n], target, optimiser)


def classification_error(backend, forward_pass, X, y, dtype):
    """Fraction of rows of ``X`` whose arg-max output differs from ``y`` (clean inputs)."""
    N, B = X.shape[0], forward_pass.batch_size
    X_in = backend.empty((B, X.shape[1]), dtype)
    predicted = backend.empty((B,), np.int64)
    wrong = 0
    with backend.session():
        for start in range(0, N, B):
            rows = np.arange(start, min(start + B, N))
            n = len(rows)
            backend.gather(X, rows, X_in[:n])
            Z = forward_pass.forward(X_in[:n])
            backend.softmax_predict(Z, predicted[:n])
            wrong += int(np.count_nonzero(backend.to_host(predicted[:n]) != y[rows]))
    return wrong / N

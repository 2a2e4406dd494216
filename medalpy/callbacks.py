"""Callbacks that turn the trainer's events into progress lines, a JSON-lines log and checkpoints.

A callback is any object with some of the methods ``on_phase_start(trainer, index, phase)``,
``on_epoch_end(trainer, record)``, ``on_phase_end(trainer, index, phase)`` and
``on_run_end(trainer)``.
"""

import json
import os
import sys
import time

from medalpy import checkpoint


def _chain_cost(trainer, phase):
    """Multiply-adds per sample of one training step of ``phase`` (the ETA's cost model)."""
    widths = [trainer.network.n_inputs] + trainer.widths[:phase.depth]
    layers = list(zip(widths[phase.input_level:phase.depth], widths[phase.input_level + 1:]))
    out = widths[phase.input_level]
    mirror = phase.decoder == "new_mirror" or (phase.decoder == "current"
                                               and trainer.network.head == "mirror")
    if mirror:
        layers += [(b, a) for a, b in zip(widths[:phase.depth], widths[1:phase.depth + 1])]
    else:
        layers.append((widths[phase.depth], out))
    return sum(a * b for a, b in layers)


def _fmt_seconds(s):
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class ProgressPrinter:
    """One line per epoch on ``stream``: phase, epoch, losses and the time left for the run.

    Time left extrapolates the seconds per unit of cost measured so far (cost = multiply-adds
    per sample of the phase's chain times its epochs).
    """

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.rate = None  # seconds per unit of cost, from the epochs timed so far

    def on_phase_start(self, trainer, index, phase):
        print(f"phase {index + 1}/{len(trainer.phases)} {phase.name}: {phase.epochs} epochs, "
              f"trains encoders {list(phase.trainable)}", file=self.stream, flush=True)

    def on_epoch_end(self, trainer, record):
        p = trainer.position.phase
        phase = trainer.phases[p]
        rate = record["seconds"] / _chain_cost(trainer, phase)
        self.rate = rate if self.rate is None else 0.7 * self.rate + 0.3 * rate
        left = (phase.epochs - record["epoch"]) * _chain_cost(trainer, phase)
        left += sum(q.epochs * _chain_cost(trainer, q) for q in trainer.phases[p + 1:])
        mark = "*" if record["improved"] else " "
        val = "        -" if record["val_loss"] is None else f"{record['val_loss']:9.3f}"
        print(f"  {record['phase']:>14} epoch {record['epoch']:>3}/{record['epochs']:<3} "
              f"loss {record['train_loss']:9.3f}  val {val}{mark} "
              f"units {record['units_spent']:>4}  {record['seconds']:6.1f}s  "
              f"left ~{_fmt_seconds(left * self.rate)}", file=self.stream, flush=True)


class JsonLinesLog:
    """Append every epoch record as one JSON line; on resume the file is rewritten from the
    checkpoint's history first, so it always matches the run."""

    def __init__(self, path, history=()):
        self.path = path
        # A fresh run writes nothing until its first epoch ends (a run that fails before
        # any training leaves no file); an existing log is made to match the checkpoint.
        if history or os.path.exists(self.path):
            with open(self.path, "w") as f:
                for record in history:
                    f.write(json.dumps(record) + "\n")

    def on_epoch_end(self, trainer, record):
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


class Checkpointer:
    """Write a resumable HDF5 checkpoint (atomically) at the end of every epoch.

    The checkpoint's ``extra`` carries ``wall_seconds``, the training time so far including
    that of earlier, interrupted sessions (``wall_before``), so a resumed run reports the
    whole time it took.
    """

    def __init__(self, path, config, extra=None, wall_before=0.0):
        self.path, self.config = path, config
        self.extra = dict(extra or {})
        self.wall_before = wall_before
        self.t0 = time.perf_counter()

    def wall_seconds(self):
        return self.wall_before + time.perf_counter() - self.t0

    def on_epoch_end(self, trainer, record):
        self.extra["wall_seconds"] = self.wall_seconds()
        checkpoint.save(self.path, trainer.network, self.config, trainer=trainer,
                        extra=self.extra)

"""HDF5 checkpoints and model files, stamped with a format name and version.

Layout (one format for both; a model file simply has no ``/trainer`` group)::

    /                attrs: format="medalpy", format_version, kind ("model"|"checkpoint"),
                            medalpy_version, config (JSON)
    /network         attrs: n_inputs, dtype, head, decoder_target (-1: none)
    /network/<layer> datasets W, b; attr trainable       (layer = encoder.0, decoder, mirror.1...)
    /trainer         attrs: phase, epoch, stopped, units_spent, best_val, best_epoch,
                            start_val (the phase's starting score; absent: not scored)
    /trainer/velocity/<param>, /trainer/best/<param>     datasets
    /trainer/history  one JSON string
    /trainer/phase_log one JSON string (absent in files written before it existed)
    /extra           one JSON string (metrics and anything else the caller records)

Files are written to a temporary name in the same directory and renamed into place, so a
crash never leaves a half-written file where a good one was. Loading reads arrays and JSON
strings only: nothing is ever unpickled.
"""

import json
import os
from pathlib import Path

import numpy as np

from medalpy import __version__
from medalpy.errors import CheckpointError
from medalpy.network import Layer, Network
from medalpy.trainer import Position

FORMAT = "medalpy"
#: 2: random streams keyed [seed, tag, ...] (resume needs the same); 3: every array stored
#: with an HDF5 Fletcher-32 checksum, so a damaged file is refused instead of read.
FORMAT_VERSION = 3
#: Versions this medalpy reads (version 2 files are version 3 without checksums).
READABLE_VERSIONS = (2, 3)


def _array(group, name, data):
    group.create_dataset(name, data=data, fletcher32=True)


def _h5py():
    import h5py  # imported lazily: it is slow to import and not needed for --help

    return h5py


def _write_json(group, name, value):
    group.create_dataset(name, data=json.dumps(value))


def _read_json(group, name):
    raw = group[name][()]
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def save(path, network, config, trainer=None, extra=None):
    """Write ``network`` (and ``trainer``'s resumable state, when given) to ``path`` atomically.

    Parameters
    ----------
    path : str or Path of the ``.h5`` file.
    network : Network.
    config : JSON-serialisable dict, the run's full configuration.
    trainer : optional :class:`medalpy.trainer.Trainer`.
    extra : optional JSON-serialisable dict (metrics, data source...).
    """
    h5py = _h5py()
    path = Path(path)
    host = trainer.backend.to_host if trainer is not None else np.asarray
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(format=FORMAT, format_version=FORMAT_VERSION,
                           kind="checkpoint" if trainer is not None else "model",
                           medalpy_version=__version__, config=json.dumps(config))
            g = f.create_group("network")
            g.attrs.update(n_inputs=network.n_inputs, dtype=np.dtype(network.dtype).name,
                           head=network.head or "",
                           decoder_target=-1 if network.decoder_target is None
                           else network.decoder_target)
            for name, layer in network.layers().items():
                lg = g.create_group(name)
                _array(lg, "W", host(layer.W))
                _array(lg, "b", host(layer.b))
                lg.attrs["trainable"] = bool(layer.trainable)
            if trainer is not None:
                _save_trainer(f.create_group("trainer"), trainer)
            _write_json(f, "extra", extra or {})
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _save_trainer(g, trainer):
    state = trainer.state()
    pos = state["position"]
    g.attrs.update(phase=pos.phase, epoch=pos.epoch, stopped=pos.stopped,
                   units_spent=state["units_spent"])
    vel = g.create_group("velocity")
    for name, v in state["velocity"].items():
        _array(vel, name, v)
    best = g.create_group("best")
    if state["start_val"] is not None:
        g.attrs["start_val"] = state["start_val"]
    if state["best"] is not None:
        g.attrs.update(best_val=state["best"]["val"], best_epoch=state["best"]["epoch"])
        for name, array in state["best"]["params"].items():
            _array(best, name, array)
    _write_json(g, "history", state["history"])
    _write_json(g, "phase_log", state["phase_log"])


def load(path):
    """Read a model or checkpoint file.

    Returns
    -------
    dict with ``network`` (Network), ``config`` (dict), ``extra`` (dict), ``kind`` and, for a
    checkpoint, ``trainer`` (the saved :meth:`medalpy.trainer.Trainer.state`, for
    :meth:`~medalpy.trainer.Trainer.restore`).

    Raises
    ------
    CheckpointError naming the file, when it is missing, damaged or of another format.
    """
    h5py = _h5py()
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model or checkpoint file")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise CheckpointError(f"{path}: not a medalpy file (no format stamp)")
            version = int(f.attrs.get("format_version", -1))
            if version not in READABLE_VERSIONS:
                raise CheckpointError(f"{path}: format version {version}, this medalpy reads "
                                      f"versions {', '.join(map(str, READABLE_VERSIONS))}")
            out = {"kind": f.attrs["kind"], "config": json.loads(f.attrs["config"]),
                   "network": _load_network(f["network"]), "extra": _read_json(f, "extra")}
            if "trainer" in f:
                out["trainer"] = _load_trainer(f["trainer"])
            return out
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: damaged or incomplete medalpy file ({exc})") from None


def _load_network(g):
    net = Network(int(g.attrs["n_inputs"]), dtype=str(g.attrs["dtype"]))
    layers = {name: Layer(g[name]["W"][()], g[name]["b"][()], bool(g[name].attrs["trainable"]))
              for name in g}
    encoders = sorted((int(n.split(".")[1]), n) for n in layers if n.startswith("encoder."))
    if [i for i, _ in encoders] != list(range(len(encoders))):
        raise KeyError("encoder layers are not numbered 0..K-1")
    net.encoders = [layers[n] for _, n in encoders]
    net.decoder = layers.get("decoder")
    target = int(g.attrs["decoder_target"])
    net.decoder_target = None if target < 0 else target
    net.mirror = {int(n.split(".")[1]): layers[n] for n in layers if n.startswith("mirror.")}
    net.classifier = layers.get("classifier")
    net.head = str(g.attrs["head"]) or None
    return net


def _load_trainer(g):
    return {
        "position": Position(int(g.attrs["phase"]), int(g.attrs["epoch"]),
                             bool(g.attrs["stopped"])),
        "units_spent": int(g.attrs["units_spent"]),
        "velocity": {name: g["velocity"][name][()] for name in g["velocity"]},
        "best": None if "best_val" not in g.attrs else {
            "val": float(g.attrs["best_val"]), "epoch": int(g.attrs["best_epoch"]),
            "params": {name: g["best"][name][()] for name in g["best"]}},
        "history": _read_json(g, "history"),
        "phase_log": _read_json(g, "phase_log") if "phase_log" in g else [],
        "start_val": float(g.attrs["start_val"]) if "start_val" in g.attrs else None,
    }

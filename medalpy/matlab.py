"""A saved network as plain MATLAB/Octave structures, and back: ``medalpy export`` / ``import``.

The ``.mat`` file (MATLAB 5 format, written by :func:`scipy.io.savemat`) holds one struct,
``model``:

``arch``
    ``[D, n_1, ..., n_K]``: input width and the units of each encoder layer (MEDAL's ``arch``).
``encoders``
    a 1 x K cell of structs ``W`` (n_k x n_{k-1}, fan_out x fan_in as MEDAL stores it), ``b``
    (n_k x 1), ``trainable`` (logical); layer k maps ``h_{k-1}`` to
    ``h_k = sigmoid(h_{k-1} W' + b')``, rows being samples.
``head``, ``decoder``, ``decoder_target``, ``mirror``, ``classifier``
    the network's head (``'decoder'``, ``'mirror'``, ``'classifier'`` or ``''``): the direct
    decoder (a struct like an encoder's, mapping the top code to ``h_decoder_target``; ``[]``
    when absent), the kept decoders of a stacked run (a cell of structs, each with a
    ``level`` i: it maps ``h_{i+1}`` back to ``h_i``), the softmax classifier (or ``[]``).
``activation``, ``output``
    ``'sigmoid'`` everywhere; ``'softmax'`` for a classifier's output.
``dtype``, ``noise``, ``noise_type``, ``method``, ``fraction``, ``kind``, ``medalpy_version``
    readable copies of the settings; ``schedule``: the phases as text, e.g.
    ``1:layer 10 epochs; 2:gradual 10 epochs`` (when the model file records them).
``config_json``, ``extra_json``
    the run's whole configuration and recorded metrics, as JSON text: what ``import`` reads
    back, so the round trip keeps every setting and every array bit for bit.

``contrib/medalpy_reconstruct.m`` computes a network's reconstruction from such a file.
"""

import json
from pathlib import Path

import numpy as np

from medalpy import __version__
from medalpy.errors import CheckpointError
from medalpy.network import Layer, Network

FORMAT = "medalpy-model"
FORMAT_VERSION = 1


def _layer_struct(layer, **more):
    return {"W": np.ascontiguousarray(layer.W.T), "b": layer.b.reshape(-1, 1),
            "trainable": np.array([[bool(layer.trainable)]]), **more}


def _cell(items):
    cell = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        cell[0, i] = item
    return cell


_EMPTY = np.zeros((0, 0))


def to_struct(network, config, extra=None, kind="model"):
    """The ``model`` struct of a network and its run's configuration (a dict of arrays,
    strings and nested dicts that :func:`scipy.io.savemat` writes as MATLAB structures)."""
    net = network
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "medalpy_version": __version__,
        "kind": kind,
        "arch": np.array([[net.n_inputs] + [layer.n_out for layer in net.encoders]],
                         dtype=float),
        "dtype": np.dtype(net.dtype).name,
        "activation": "sigmoid",
        "output": "softmax" if net.head == "classifier" else "sigmoid",
        "method": str(config.get("method", "")),
        "fraction": np.nan if config.get("fraction") is None else float(config["fraction"]),
        "noise": float(config.get("noise", np.nan) if config.get("noise") is not None
                       else np.nan),
        "noise_type": str(config.get("noise_type", "")),
        "schedule": "; ".join(f"{p['name']} {p['epochs']} epochs"
                              for p in (extra or {}).get("schedule", [])),
        "encoders": _cell([_layer_struct(layer) for layer in net.encoders]),
        "head": net.head or "",
        "decoder": _layer_struct(net.decoder) if net.decoder is not None else _EMPTY,
        "decoder_target": -1 if net.decoder_target is None else int(net.decoder_target),
        "mirror": _cell([_layer_struct(net.mirror[i], level=i) for i in sorted(net.mirror)]),
        "classifier": (_layer_struct(net.classifier) if net.classifier is not None
                       else _EMPTY),
        "config_json": json.dumps(config),
        "extra_json": json.dumps(extra or {}),
    }


def export_mat(model_path, out_path):
    """Write the network of a model (or checkpoint) file as ``out_path`` (see the module
    docstring), atomically."""
    import scipy.io

    from medalpy import checkpoint
    from medalpy.atomic import replace_atomic

    saved = checkpoint.load(model_path)
    struct = to_struct(saved["network"], saved["config"], saved["extra"], saved["kind"])
    with replace_atomic(out_path) as tmp:
        scipy.io.savemat(tmp, {"model": struct}, format="5", do_compression=False)


def _unwrap(value):
    """A 1 x 1 cell or struct array as its one element (loadmat keeps MATLAB's 2-D shapes)."""
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.item()
    if isinstance(value, np.ndarray) and value.dtype.kind == "O" and value.shape == (1, 1):
        value = value[0, 0]
    return value


class _Reader:
    """Reads the fields of a loaded ``model`` struct, naming the file in every error."""

    def __init__(self, path, struct):
        self.path, self.struct = path, _unwrap(struct)

    def fail(self, what):
        raise CheckpointError(f"{self.path}: not a medalpy .mat model ({what})")

    def field(self, name, struct=None):
        struct = self.struct if struct is None else struct
        if name not in (getattr(struct, "_fieldnames", None) or ()):
            self.fail(f"no field {name!r}")
        return getattr(struct, name)

    def text(self, name):
        value = self.field(name)
        if not isinstance(value, np.ndarray) or value.dtype.kind != "U" or value.size > 1:
            self.fail(f"{name} is not text")
        return str(value.item()) if value.size else ""

    def number(self, name, struct=None):
        value = np.asarray(self.field(name, struct))
        if value.size != 1 or not np.issubdtype(value.dtype, np.number):
            self.fail(f"{name} is not a number")
        return value.item()

    def layer(self, struct, what, dtype, n_in=None):
        struct = _unwrap(struct)
        W, b = (np.asarray(self.field(n, struct)) for n in ("W", "b"))
        if W.ndim != 2 or b.ndim != 2 or b.shape != (W.shape[0], 1):
            self.fail(f"{what}: W must be fan_out x fan_in and b fan_out x 1")
        if W.dtype != dtype or b.dtype != dtype:
            self.fail(f"{what}: arrays are {W.dtype}, the model's dtype is {dtype}")
        if n_in is not None and W.shape[1] != n_in:
            self.fail(f"{what}: W has {W.shape[1]} columns, the layer below gives {n_in}")
        trainable = bool(self.number("trainable", struct))
        return Layer(np.ascontiguousarray(W.T), b.reshape(-1).copy(), trainable)

    def cell(self, name):
        value = self.field(name)
        if not isinstance(value, np.ndarray) or (value.size and value.dtype != object):
            self.fail(f"{name} is not a cell array")
        return [_unwrap(item) for item in value.ravel()]

    def optional_layer(self, name, dtype, n_in):
        value = self.field(name)
        if isinstance(value, np.ndarray) and value.size == 0:
            return None
        return self.layer(value, name, dtype, n_in)


def from_mat(path):
    """Read a ``.mat`` file written by :func:`export_mat`.

    Returns
    -------
    dict like :func:`medalpy.checkpoint.load`'s: ``network``, ``config``, ``extra``, ``kind``.

    Raises
    ------
    CheckpointError naming the file, for anything that is not such a model.
    """
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such .mat file")
    try:
        contents = scipy.io.loadmat(path, struct_as_record=False)
    except Exception as exc:  # scipy raises many kinds for a damaged file
        raise CheckpointError(f"{path}: not a readable .mat file ({exc})") from None
    if "model" not in contents:
        raise CheckpointError(f"{path}: not a medalpy .mat model (no variable 'model')")
    r = _Reader(path, contents["model"])
    if r.text("format") != FORMAT:
        r.fail(f"format is {r.text('format')!r}")
    if int(r.number("format_version")) != FORMAT_VERSION:
        r.fail(f"format version {r.number('format_version')}, this medalpy reads "
               f"{FORMAT_VERSION}")
    try:
        config, extra = json.loads(r.text("config_json")), json.loads(r.text("extra_json"))
    except json.JSONDecodeError as exc:
        r.fail(f"config_json or extra_json is not JSON: {exc}")
    dtype = np.dtype(r.text("dtype"))
    arch = np.asarray(r.field("arch")).ravel()
    net = Network(int(arch[0]), dtype=dtype.name)
    for k, struct in enumerate(r.cell("encoders")):
        net.encoders.append(r.layer(struct, f"encoder {k + 1}", dtype, net.width(k)))
    if [int(a) for a in arch] != [net.n_inputs] + [layer.n_out for layer in net.encoders]:
        r.fail("arch does not match the encoders' sizes")
    head = r.text("head")
    if head not in ("",) + Network.HEADS:
        r.fail(f"head {head!r}")
    net.head = head or None
    target = int(r.number("decoder_target"))
    net.decoder = r.optional_layer(
        "decoder", dtype, net.width(net.depth) if net.depth else None)
    net.decoder_target = None if target < 0 else target
    for struct in r.cell("mirror"):
        level = int(r.number("level", struct))
        if not 0 <= level < net.depth:
            r.fail(f"mirror level {level} outside 0..{net.depth - 1}")
        net.mirror[level] = r.layer(struct, f"mirror {level}", dtype, net.width(level + 1))
    net.classifier = r.optional_layer(
        "classifier", dtype, net.width(net.depth) if net.depth else None)
    if (head == "decoder") != (net.decoder is not None) or (
            head == "classifier") != (net.classifier is not None):
        r.fail(f"head {head!r} does not match the layers present")
    return {"network": net, "config": config, "extra": extra, "kind": r.text("kind")}


def import_mat(in_path, out_dir, overwrite=False):
    """Read a ``.mat`` model (:func:`from_mat`) into ``out_dir/model.h5``; returns its path."""
    from medalpy import checkpoint, outputs

    loaded = from_mat(in_path)  # a malformed file fails before any folder is made
    with outputs.claim(out_dir, "train", overwrite=overwrite) as out:
        checkpoint.save(out / "model.h5", loaded["network"], loaded["config"],
                        extra=loaded["extra"])
    return Path(out_dir) / "model.h5"

"""Layers and the layered network: state only, no loops, no printing.

A network is a stack of encoder layers ``h_k = sigma(h_{k-1} W_k + b_k)`` (``h_0`` the input)
and at most one head on top at a time:

``decoder``
    one untied layer from the top code back to the level it reconstructs: the input
    (``target_level = 0``, the gradual and direct topology) or the code just below the top
    (a stacked phase);
``mirror``
    the kept per-phase decoders of a stacked run, applied top-down
    ``h_k -> h_{k-1} -> ... -> h_0``;
``classifier``
    a softmax layer over ``n_classes``.

Every array has a stable name (``encoder.0.W``, ``decoder.b``, ``mirror.1.W``,
``classifier.W``) by which gradients, optimiser state and checkpoints are keyed, so adding
or freezing a layer never shifts a list. Freezing only flips ``trainable``: a frozen layer
still passes gradients down to trainable layers below it.
"""

from dataclasses import dataclass

import numpy as np

from medalpy.config import resolve_dtype
from medalpy.errors import ConfigError


@dataclass
class Layer:
    """An affine map ``x -> x W + b`` with ``W`` (n_in, n_out), ``b`` (n_out,)."""

    W: np.ndarray
    b: np.ndarray
    trainable: bool = True

    @property
    def n_in(self):
        return self.W.shape[0]

    @property
    def n_out(self):
        return self.W.shape[1]


def init_medal(n_in, n_out, rng, dtype):
    """MEDAL's (and Glorot's) ``W ~ U(+-sqrt(6 / (n_in + n_out)))``."""
    r = np.sqrt(6.0 / (n_in + n_out))
    return rng.uniform(-r, r, size=(n_in, n_out)).astype(dtype)


def init_normal(n_in, n_out, rng, dtype):
    """``W ~ N(0, 0.01^2)``, the other common choice for sigmoid autoencoders."""
    return (0.01 * rng.standard_normal((n_in, n_out))).astype(dtype)


def init_zeros(n_in, n_out, rng, dtype):
    """All-zero weights (useful for softmax heads and for tests)."""
    return np.zeros((n_in, n_out), dtype=dtype)


INITIALISERS = {"medal": init_medal, "normal": init_normal, "zeros": init_zeros}


def new_layer(n_in, n_out, rng, dtype, init="medal"):
    """A trainable :class:`Layer` with weights from the named initialiser and zero bias."""
    if init not in INITIALISERS:
        raise ConfigError(f"unknown initialisation {init!r}; choose one of {sorted(INITIALISERS)}")
    return Layer(INITIALISERS[init](n_in, n_out, rng, dtype), np.zeros(n_out, dtype=dtype))


class Network:
    """A stack of encoder layers with at most one head.

    Parameters
    ----------
    n_inputs : int
        Dimension D of the input space.
    dtype : float32 (default) or float64.
    """

    HEADS = ("decoder", "mirror", "classifier")

    def __init__(self, n_inputs, dtype=None):
        self.n_inputs = int(n_inputs)
        self.dtype = resolve_dtype(dtype)
        self.encoders = []
        self.decoder = None
        self.decoder_target = None  # level the direct decoder reconstructs (0 = input)
        self.mirror = {}  # i -> Layer mapping h_{i+1} back to h_i, kept from stacked phases
        self.classifier = None
        self.head = None  # one of HEADS, or None

    # -- structure -----------------------------------------------------------------------

    @property
    def depth(self):
        """Number of encoder layers."""
        return len(self.encoders)

    def width(self, level):
        """Dimension of ``h_level`` (level 0 is the input)."""
        return self.n_inputs if level == 0 else self.encoders[level - 1].n_out

    def add_encoder(self, n_units, rng, init="medal"):
        """Put a new trainable encoder layer of ``n_units`` on top; returns it."""
        layer = new_layer(self.width(self.depth), int(n_units), rng, self.dtype, init)
        self.encoders.append(layer)
        return layer

    def attach_decoder(self, rng, target_level=0, init="medal"):
        """Attach a fresh direct decoder from the top code to ``h_target_level``."""
        self._require_no_head()
        if not 0 <= target_level < self.depth:
            raise ConfigError(f"decoder target level {target_level} outside 0..{self.depth - 1}")
        self.decoder = new_layer(self.width(self.depth), self.width(target_level), rng,
                                 self.dtype, init)
        self.decoder_target = target_level
        self.head = "decoder"
        return self.decoder

    def keep_decoder_as_mirror(self):
        """Move a stacked phase's decoder (top code -> code below) into the mirror stack."""
        if self.head != "decoder" or self.decoder_target != self.depth - 1:
            raise ConfigError("only a decoder to the level just below the top can be mirrored")
        self.mirror[self.depth - 1] = self.decoder
        self.decoder, self.decoder_target, self.head = None, None, None

    def use_mirror(self):
        """Make the kept phase decoders the head (needs one for every level)."""
        self._require_no_head()
        missing = [i for i in range(self.depth) if i not in self.mirror]
        if missing:
            raise ConfigError(f"no kept decoder for levels {missing}: the mirror needs all")
        self.head = "mirror"

    def attach_classifier(self, n_classes, rng, init="medal"):
        """Attach a fresh softmax layer over ``n_classes`` on top of the encoders."""
        self._require_no_head()
        self.classifier = new_layer(self.width(self.depth), int(n_classes), rng, self.dtype, init)
        self.head = "classifier"
        return self.classifier

    def discard_head(self):
        """Drop the current head; a direct decoder or classifier is deleted, the mirror kept."""
        if self.head == "decoder":
            self.decoder, self.decoder_target = None, None
        elif self.head == "classifier":
            self.classifier = None
        self.head = None

    def discard_mirror(self):
        """Delete the kept phase decoders."""
        if self.head == "mirror":
            self.head = None
        self.mirror = {}

    def freeze(self, index):
        """Stop updating encoder ``index``; it still passes gradients down."""
        self.encoders[index].trainable = False

    def unfreeze(self, index):
        self.encoders[index].trainable = True

    def _require_no_head(self):
        if self.head is not None:
            raise ConfigError(f"the network already has a {self.head} head; discard it first")

    # -- names ---------------------------------------------------------------------------

    def layers(self):
        """Every layer the network holds, by name, heads and kept decoders included."""
        named = {f"encoder.{i}": layer for i, layer in enumerate(self.encoders)}
        if self.decoder is not None:
            named["decoder"] = self.decoder
        for i in sorted(self.mirror):
            named[f"mirror.{i}"] = self.mirror[i]
        if self.classifier is not None:
            named["classifier"] = self.classifier
        return named

    def parameters(self):
        """Every array by its stable name: ``{"encoder.0.W": W, "encoder.0.b": b, ...}``."""
        params = {}
        for name, layer in self.layers().items():
            params[f"{name}.W"] = layer.W
            params[f"{name}.b"] = layer.b
        return params

    def path(self, start_level=0):
        """The active chain from ``h_start_level`` to the head's output, as (name, Layer) pairs.

        Encoders ``start_level .. depth-1``, then the head: the direct decoder, the mirror
        layers from the top down, or the classifier.
        """
        chain = [(f"encoder.{i}", self.encoders[i]) for i in range(start_level, self.depth)]
        if self.head == "decoder":
            chain.append(("decoder", self.decoder))
        elif self.head == "mirror":
            chain += [(f"mirror.{i}", self.mirror[i]) for i in reversed(range(self.depth))]
        elif self.head == "classifier":
            chain.append(("classifier", self.classifier))
        else:
            raise ConfigError("the network has no head to compute an output with")
        return chain

    def place(self, convert):
        """Replace every array by ``convert(array)``: ``backend.to_device`` puts the network
        where a backend computes, ``backend.to_host`` brings it back (both are no-ops on the
        CPU backends)."""
        for layer in self.layers().values():
            layer.W, layer.b = convert(layer.W), convert(layer.b)

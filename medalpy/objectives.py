"""Training objectives and the reconstruction metric.

Reconstruction: ``CE(t, y) = -sum_j [t_j log y_j + (1 - t_j) log(1 - y_j)]`` with
``y = sigma(z)``, summed over output units and averaged over the batch. Classification: the
negative log-likelihood of a softmax. Both hand the output delta ``dE/dz`` to backprop; the
kernels compute it from pre-activations (see :mod:`medalpy.kernels.reference`).

The paper's metric is the *relative* cross-entropy ``CE(x, y) - CE(x, x)``: the entropy
``CE(x, x)`` of the clean image is the least any reconstruction can score.
"""

import numpy as np


class SigmoidCrossEntropy:
    """Sigmoid outputs against targets in [0, 1] (reconstruction)."""

    name = "sigmoid_cross_entropy"

    @staticmethod
    def loss_and_delta(backend, Z, T, delta):
        """Batch-mean CE of ``sigma(Z)`` against ``T``; writes ``dE/dZ`` into ``delta``."""
        return backend.sigmoid_cross_entropy(Z, T, delta)


class SoftmaxCrossEntropy:
    """Softmax outputs against integer class labels (classification)."""

    name = "softmax_cross_entropy"

    @staticmethod
    def loss_and_delta(backend, Z, labels, delta):
        """Batch-mean NLL of ``softmax(Z)`` at ``labels``; writes ``dE/dZ`` into ``delta``."""
        return backend.softmax_cross_entropy(Z, labels, delta)


def objective_for(head):
    """The objective a network head is trained with."""
    return SoftmaxCrossEntropy if head == "classifier" else SigmoidCrossEntropy


def entropy(T):
    """Per-row ``CE(t, t) = -sum_j [t log t + (1-t) log(1-t)]`` (0 log 0 = 0), float64 (N,).

    Parameters
    ----------
    T : (N, D) float array in [0, 1].
    """
    T = np.asarray(T, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where(T > 0, T * np.log(T), 0.0) + np.where(T < 1, (1 - T) * np.log1p(-T), 0.0)
    return -h.sum(axis=1)

"""Forward and backward passes through a chain of layers, with workspaces sized once.

A chain is the active path of a network (:meth:`medalpy.network.Network.path`): layers
``1..L``, sigmoid hidden units, and an output scored by an objective. For a batch ``X`` of
``n <= batch_size`` rows:

    forward    A_l = sigma(A_{l-1} W_l + b_l)  for l < L,   A_0 = X
               Z_L = A_{L-1} W_L + b_L                      (the output pre-activation)
    loss       E, delta_L = dE/dZ_L                          (objective kernel)
    backward   dW_l = A_{l-1}^T delta_l,   db_l = sum_rows delta_l       (trainable l only)
               delta_{l-1} = (delta_l W_l^T) * A_{l-1} (1 - A_{l-1})     (down to the lowest
                                                                          trainable layer)

Frozen layers get no gradient arrays but pass deltas down when a trainable layer lies below
them; nothing below the lowest trainable layer is computed. All buffers are allocated in
:class:`Pass` once per phase, so a training step allocates no arrays.
"""

import numpy as np

from medalpy import config
from medalpy.objectives import objective_for



class Pass:
    """Workspaces and passes for one chain at one batch size.

    Two ways to train through it:

    - :meth:`backward` leaves every trainable layer's gradient in its own buffer
      (:attr:`grads`), for gradient checks and for optimisers that want them all at once;
    - :meth:`train_step` (what the trainer runs) updates each layer through the optimiser as
      soon as its gradient is final; where the gradient's norm is known without ``dW``, the
      backend forms ``dW`` inside the update and never stores it (docs/performance.md), and
      otherwise one weight-gradient buffer serves every layer.

    Parameters
    ----------
    backend : a kernel module from :func:`medalpy.kernels.get_backend`.
    chain : list of (name, Layer) from input to output.
    batch_size : int, the largest batch the pass will see.
    head : ``"decoder"``, ``"mirror"`` or ``"classifier"``; chooses the objective.
    dtype : float dtype of the workspaces.
    train : bool; False builds a forward-only pass (no deltas, no gradients).
    """

    def __init__(self, backend, chain, batch_size, head, dtype, train=True):
        self.backend = backend
        self.names = [name for name, _ in chain]
        self.layers = [layer for _, layer in chain]
        for (a, la), (b, lb) in zip(chain, chain[1:]):
            if la.n_out != lb.n_in:  # the kernels trust shapes; check them once, here
                raise ValueError(f"{a} gives {la.n_out} units but {b} takes {lb.n_in}")
        self.objective = objective_for(head)
        self.batch_size = int(batch_size)
        self.dtype = np.dtype(dtype)
        B = self.batch_size
        # acts[l]: A_l for hidden layers, Z_L for the output layer.
        self.acts = [backend.empty((B, layer.n_out), dtype) for layer in self.layers]
        self.output = backend.empty((B, self.layers[-1].n_out), dtype)  # sigma(Z_L)
        self.trainable = [i for i, layer in enumerate(self.layers) if layer.trainable]
        self.lowest = self.trainable[0] if (train and self.trainable) else None
        last = len(self.layers) - 1
        # The output delta is always there: evaluation computes the loss through it too.
        self.deltas = {last: backend.empty((B, self.layers[last].n_out), dtype)}
        self.bias_grads = {}
        if self.lowest is not None:
            for i in range(self.lowest, last):
                self.deltas[i] = backend.empty((B, self.layers[i].n_out), dtype)
            for i in self.trainable:
                self.bias_grads[i] = backend.empty(self.layers[i].b.shape, dtype)
        # Weight-gradient buffers, made on first use: one per layer for backward(), one
        # shared for train_step().
        self._weight_grads = None
        self._shared_weight_grads = None
        self._plans = {}

    @property
    def grads(self):
        """``{layer index: (dW, db)}`` as left by :meth:`backward`."""
        return {i: (dW, self.bias_grads[i]) for i, dW in self._own_weight_grads().items()}

    def _own_weight_grads(self):
        if self._weight_grads is None:
            self._weight_grads = {i: self.backend.empty(self.layers[i].W.shape, self.dtype)
                                  for i in (self.trainable if self.lowest is not None else [])}
        return self._weight_grads

    def _shared_weight_grads_views(self):
        """Views of one flat buffer, shaped as each trainable layer's W (made once)."""
        if self._shared_weight_grads is None:
            shapes = {i: self.layers[i].W.shape for i in self.trainable}
            flat = self.backend.empty((max(a * b for a, b in shapes.values()),), self.dtype)
            self._shared_weight_grads = {i: flat[:a * b].reshape(a, b)
                                         for i, (a, b) in shapes.items()}
        return self._shared_weight_grads

    def _plan(self, n):
        """Row views ``[:n]`` of every workspace, built once per batch length ``n``.

        A step otherwise slices a dozen arrays (and looks up dicts) in Python; at the paper's
        batch sizes that overhead is a visible part of a step. The backward entries are
        ``(layer index, delta, activations below or None for the input, (layer, delta below)
        or None)`` from the output layer down to the lowest trainable one.
        """
        plan = self._plans.get(n)
        if plan is None:
            last = len(self.layers) - 1
            acts = [a[:n] for a in self.acts]
            deltas = {i: d[:n] for i, d in self.deltas.items()}
            forward = [(layer, acts[i], acts[i] if i < last else self.output[:n])
                       for i, layer in enumerate(self.layers)]
            backward = []
            if self.lowest is not None:
                for i in range(last, self.lowest - 1, -1):
                    down = (self.layers[i], deltas[i - 1]) if i > self.lowest else None
                    backward.append((i, deltas[i], None if i == 0 else acts[i - 1], down))
            plan = self._plans[n] = (forward, acts[last], deltas[last], backward)
        return plan

    def forward(self, X):
        """Run the chain on ``X`` (n, D_0); returns the output pre-activation view (n, D_L)."""
        k = self.backend
        forward, Z_out, _, _ = self._plan(X.shape[0])
        A = X
        for layer, Z, H in forward:
            k.matmul(A, layer.W, Z)
            # Hidden layers squash in place (Z is not needed again, A is); the output keeps Z
            # for the objective, which works from pre-activations.
            k.add_bias_sigmoid(Z, layer.b, H)
            A = Z
        return Z_out

    def loss(self, X, target):
        """The batch-mean loss of ``X`` against ``target``, without gradients."""
        Z = self.forward(X)
        return self.objective.loss_and_delta(self.backend, Z, target, self._plan(len(X))[2])

    def _layer_gradient(self, X, i, delta, below, dW):
        """``dW = A_{l-1}^T delta_l`` and ``db = sum_rows delta_l`` of layer ``i``."""
        k = self.backend
        k.matmul_tn(X if below is None else below, delta, dW)
        k.column_sum(delta, self.bias_grads[i])

    def _delta_down(self, down, delta, below):
        """``delta_{l-1} = (delta_l W_l^T) * A_{l-1} (1 - A_{l-1})``, with W_l not yet updated."""
        if down is not None:
            k = self.backend
            layer, delta_below = down
            k.matmul_nt(delta, layer.W, delta_below)
            k.sigmoid_backward(delta_below, below, delta_below)

    def backward(self, X, target):
        """Loss and gradients for a batch: forward, objective, backward.

        Parameters
        ----------
        X : (n, D_0) input batch (already corrupted where the schedule says so).
        target : (n, D_L) float reconstruction target, or (n,) int labels.

        Returns
        -------
        float, the batch-mean loss. Gradients are left in :attr:`grads` (index -> (dW, db)).
        """
        Z = self.forward(X)
        self._last_input = X
        _, _, delta_out, backward = self._plan(X.shape[0])
        loss = self.objective.loss_and_delta(self.backend, Z, target, delta_out)
        weight_grads = self._own_weight_grads()
        for i, delta, below, down in backward:
            if i in weight_grads:
                self._layer_gradient(X, i, delta, below, weight_grads[i])
            self._delta_down(down, delta, below)
        return loss

    def train_step(self, X, target, optimiser):
        """One SGD step on a batch: forward, objective, and a backward pass that updates each
        trainable layer as soon as its gradient is final.

        Layer ``l``'s gradient and the delta passed below it are computed from the weights
        the forward pass used; only then does the optimiser change ``W_l`` and ``b_l``. The
        result equals :meth:`backward` followed by an update of every layer (the tests check
        this). ``dW`` is not formed here at all: the optimiser's ``apply_product`` hands
        ``A_{l-1}`` and ``delta_l`` to the backend, which forms and applies it block by
        block, with normGrad's norm from the batch's Gram matrices. Only with normGrad and
        more than ``config.GRAM_MAX_BATCH`` rows, where the Gram matrices cost more than
        reading ``dW``, is ``dW`` stored (one buffer shared by every layer) for its norm
        (docs/performance.md).

        Parameters
        ----------
        X, target : as for :meth:`backward`.
        optimiser : :class:`medalpy.optim.SGD` (``apply``, ``apply_product`` and
            ``normalise_gradients``).

        Returns
        -------
        float, the batch-mean loss before the update.
        """
        k = self.backend
        Z = self.forward(X)
        n = X.shape[0]
        _, _, delta_out, backward = self._plan(n)
        loss = self.objective.loss_and_delta(k, Z, target, delta_out)
        normalise = optimiser.normalise_gradients
        by_product = n <= config.GRAM_MAX_BATCH or not normalise
        weight_grads = None if by_product else self._shared_weight_grads_views()
        for i, delta, below, down in backward:
            trainable = i in self.bias_grads
            A = X if below is None else below
            if trainable:
                db = self.bias_grads[i]
                k.column_sum(delta, db)
                if by_product:
                    sq = self._sq_norm(A, delta, None, db) if normalise else None
                else:
                    dW = weight_grads[i]
                    k.matmul_tn(A, delta, dW)
                    sq = self._sq_norm(A, delta, dW, db) if normalise else None
            self._delta_down(down, delta, below)
            if trainable:
                name, layer = self.names[i], self.layers[i]
                if by_product:
                    optimiser.apply_product(k, name, layer, A, delta, db, sq)
                else:
                    optimiser.apply(k, name, layer, dW, db, sq)
        return loss

    def _sq_norm(self, below, delta, dW, db):
        """``||dW||^2 + ||db||^2`` of one layer.

        For a batch of n <= config.GRAM_MAX_BATCH rows, ``||dW||^2 = ||A^T delta||_F^2 =
        trace((A A^T)(delta delta^T))`` comes from the batch's Gram matrices
        (``product_sq_norm``), and ``dW`` need not exist (``dW`` may be None). Larger batches
        read ``dW``.
        """
        k = self.backend
        if below.shape[0] <= config.GRAM_MAX_BATCH:
            w = k.product_sq_norm(below, delta)
        else:
            w = k.sum_of_squares(dW)
        return w + k.sum_of_squares(db)

    def gradient_sq_norms(self):
        """``||dW||^2 + ||db||^2`` of each trainable layer after :meth:`backward`, in the order
        of :meth:`named_gradients` (for MEDAL's gradient normalisation)."""
        X = self._last_input
        _, _, _, backward = self._plan(X.shape[0])
        grads = self.grads
        norms = {i: self._sq_norm(X if below is None else below, delta, *grads[i])
                 for i, delta, below, _ in backward if i in grads}
        return [norms[i] for i in grads]

    def named_gradients(self):
        """``[(name, layer, dW, db)]`` for the trainable layers after :meth:`backward`."""
        return [(self.names[i], self.layers[i], dW, db) for i, (dW, db) in self.grads.items()]


def encode(backend, encoders, X, batch_size=1000, out=None):
    """Clean codes ``h_k`` of every row of ``X`` through ``encoders`` (a list of Layers).

    Parameters
    ----------
    X : (N, D) uint8 (scaled by 1/255 as gathered) or float array.
    out : optional (N, n_out) float array to write into; allocated when None.

    Returns
    -------
    (N, n_out) array of codes, in the dtype of the encoders' weights.
    """
    dtype = encoders[0].W.dtype
    N = X.shape[0]
    if out is None:
        out = backend.empty((N, encoders[-1].n_out), dtype)
    bufs = [backend.empty((batch_size, X.shape[1]), dtype)]
    bufs += [backend.empty((batch_size, layer.n_out), dtype) for layer in encoders]
    for start in range(0, N, batch_size):
        rows = np.arange(start, min(start + batch_size, N))
        n = len(rows)
        A = bufs[0][:n]
        backend.gather(X, rows, A)
        for layer, buf in zip(encoders, bufs[1:]):
            backend.matmul(A, layer.W, buf[:n])
            backend.add_bias_sigmoid(buf[:n], layer.b, buf[:n])
            A = buf[:n]
        out[start:start + n] = A
    return out

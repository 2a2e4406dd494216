"""Many networks in one step: the cuda backend's batched step for cohorts (:mod:`medalpy.cohort`).

A :class:`CohortStep` trains M networks of the same shapes at once: a leading model axis on
every array, strided-batched cuBLAS products (one launch for all M), and element-wise kernels
whose grid covers the M models. It is :class:`medalpy.kernels.cuda_step.DeviceStep` with
that axis: per epoch one upload of each model's row order, noise key and learning rates, a
recorded step per batch length (replayed, or captured as a CUDA graph), and one read of the M
loss sums. Each model keeps its own data, rows' order, noise stream, learning rates,
normGrad scale and velocities; the models' results equal those of the same steps taken one
model at a time (tests/kernels/cuda_sim_cases.py).

Arrays are stacked ``(M, ...)``; each member's parameters and velocities become views of
their stack (``layer.W = W_stack[m]``), so everything a member does outside the step (its
validation, best-parameter snapshots, checkpoints, the copy back to the host when its phase
ends) reads and writes its own slice. A member's training inputs (uint8 images, or the codes
of its frozen layers) are copied into one ``(M, N, D)`` stack when the step is made.
"""

import math

import numpy as np
from numba import cuda

from medalpy.config import noise_epoch_key, noise_threshold
from medalpy.kernels import cuda as K
from medalpy.kernels.cuda import (
    _RB,
    _SS_BLOCKS,
    _TPB,
    CLEAN,
    GAUSSIAN,
    _block_sum_f64,
    _blocks,
    _sigmoid,
    _sigmoid_backward_kernel,
)
from medalpy.kernels.cuda_step import (
    KINDS,
    Recorded,
    Tape,
    _advance_kernel,
    _corrupt,
    batch_starts,
    learning_rates,
)


# ----------------------------------------------------------------------------------------
# Kernels over a leading model axis (the single-model kernels of cuda.py and cuda_step.py,
# with the model's index from the grid).
# ----------------------------------------------------------------------------------------


@cuda.jit(device=True)
def _model_row_col(idx, n, d):
    """The (model, row, column) of flat index ``idx`` over an ``(M, n, d)`` array."""
    q = idx // (n * d)
    rest = idx - q * n * d
    i = rest // d
    return q, i, rest - i * d


@cuda.jit
def _gather_kernel(X, order, starts, cursor, scale, kind, keys, threshold, sigma, out):
    # out[q, i, :] = corrupt(X[q, order[q, starts[cursor] + i], :]) with model q's noise key.
    idx = cuda.grid(1)
    M, n, d = out.shape
    if idx < M * n * d:
        q, i, j = _model_row_col(idx, n, d)
        r = order[q, starts[cursor[0]] + i]
        v = out.dtype.type(X[q, r, j]) * scale
        out[q, i, j] = _corrupt(v, r, j, kind, keys[q], threshold, sigma, out)


@cuda.jit
def _labels_kernel(y, order, starts, cursor, out):
    idx = cuda.grid(1)
    M, n = out.shape
    if idx < M * n:
        q = idx // n
        i = idx - q * n
        out[q, i] = y[q, order[q, starts[cursor[0]] + i]]


@cuda.jit
def _bias_sigmoid_kernel(Z, b, out):
    idx = cuda.grid(1)
    M, n, d = Z.shape
    if idx < M * n * d:
        q, i, j = _model_row_col(idx, n, d)
        z = Z[q, i, j] + b[q, j]
        Z[q, i, j] = z
        out[q, i, j] = _sigmoid(z, out.dtype.type(1))


@cuda.jit
def _sigmoid_ce_kernel(Z, T, delta, row_loss):
    # cuda._sigmoid_ce_kernel, one block per (model, row); the delta is divided by the
    # model's batch length n, not by M n.
    block = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    M, n, d = Z.shape
    q = block // n
    i = block - q * n
    one = delta.dtype.type(1)
    zero = delta.dtype.type(0)
    Bf = delta.dtype.type(n)
    acc = cuda.shared.array(_RB, np.float64)
    s = 0.0
    for j in range(tid, d, _RB):
        z = Z[q, i, j]
        t = T[q, i, j]
        e = math.exp(-abs(z))
        s += np.float64(((z if z > zero else zero) + math.log1p(e)) - t * z)
        y = (one if z >= zero else e) / (one + e)
        delta[q, i, j] = (y - t) / Bf
    acc[tid] = s
    _block_sum_f64(acc, tid)
    if tid == 0:
        row_loss[q, i] = acc[0]


@cuda.jit
def _softmax_ce_kernel(Z, labels, delta, row_loss):
    # cuda._softmax_ce_kernel, one thread per (model, row).
    idx = cuda.grid(1)
    M, n, c = Z.shape
    if idx < M * n:
        q = idx // n
        i = idx - q * n
        Bf = delta.dtype.type(n)
        one = delta.dtype.type(1)
        y = labels[q, i]
        if y < 0 or y >= c:
            row_loss[q, i] = -math.inf
            return
        m = Z[q, i, 0]
        for k in range(1, c):
            if Z[q, i, k] > m:
                m = Z[q, i, k]
        s = delta.dtype.type(0)
        for k in range(c):
            s += math.exp(Z[q, i, k] - m)
        log_norm = math.log(s)
        row_loss[q, i] = np.float64(log_norm - (Z[q, i, y] - m))
        for k in range(c):
            p = math.exp((Z[q, i, k] - m) - log_norm)
            if k == y:
                p -= one
            delta[q, i, k] = p / Bf


@cuda.jit
def _accumulate_kernel(row_loss, total):
    q = cuda.grid(1)
    if q < total.shape[0]:
        s = 0.0
        for i in range(row_loss.shape[1]):
            s += row_loss[q, i]
        total[q] += s


@cuda.jit
def _column_sum_kernel(delta, out):
    idx = cuda.grid(1)
    M, n, d = delta.shape
    if idx < M * d:
        q = idx // d
        j = idx - q * d
        s = delta[q, 0, j] if n > 0 else out.dtype.type(0)
        for i in range(1, n):
            s += delta[q, i, j]
        out[q, j] = s


@cuda.jit
def _sum_of_squares_kernel(g, partial):
    # cuda._sum_of_squares_kernel for model q = blockIdx.y over g[q, :], into partial[q, :].
    q = cuda.blockIdx.y
    tid = cuda.threadIdx.x
    acc = cuda.shared.array(_RB, np.float64)
    s = 0.0
    start = cuda.blockIdx.x * _RB + tid
    stride = cuda.gridDim.x * _RB
    for i in range(start, g.shape[1], stride):
        x = np.float64(g[q, i])
        s += x * x
    acc[tid] = s
    _block_sum_f64(acc, tid)
    if tid == 0:
        partial[q, cuda.blockIdx.x] = acc[0]


@cuda.jit
def _norm_scale_kernel(partial, scales, col):
    q = cuda.grid(1)
    if q < scales.shape[0]:
        s = 0.0
        for i in range(partial.shape[1]):
            s += partial[q, i]
        scales[q, col] = 1.0 / math.sqrt(s) if s > 0.0 else 1.0


@cuda.jit
def _sgd_kernel(p, g, v, lrs, cursor, col, momentum, decay, scales):
    # cuda_step._sgd_at_kernel over (M, size) flat parameters, model q's rate and scale.
    idx = cuda.grid(1)
    M, size = p.shape
    if idx < M * size:
        q = idx // size
        i = idx - q * size
        lr = p.dtype.type(lrs[q, cursor[0], col])
        scale = p.dtype.type(scales[q, col])
        vi = momentum * v[q, i] + lr * (scale * g[q, i] + decay * p[q, i])
        v[q, i] = vi
        p[q, i] = p[q, i] - vi


# ----------------------------------------------------------------------------------------
# The batched step.
# ----------------------------------------------------------------------------------------


def _stack(arrays):
    """A new ``(M, ...)`` device array holding ``arrays`` (device arrays of one shape)."""
    out = K.empty((len(arrays),) + tuple(arrays[0].shape), arrays[0].dtype)
    for q, a in enumerate(arrays):
        out[q].copy_to_device(a)
    return out


def _flat(stack):
    """A ``(M, size)`` view of a contiguous ``(M, ...)`` stack."""
    return stack.reshape(stack.shape[0], stack.size // stack.shape[0])


class CohortStep(Recorded):
    """Train M :class:`medalpy.trainer.PhaseRun` s of equal ``signature`` epoch by epoch, as one.

    Parameters
    ----------
    runs : list of PhaseRun (their passes, inputs, noise settings and labels).
    """

    def __init__(self, runs):
        self.runs = list(runs)
        first = runs[0]
        self.M = M = len(runs)
        self.passes = [run.train_pass for run in runs]
        self.names = first.train_pass.names
        self.trainable = (list(first.train_pass.trainable)
                          if first.train_pass.lowest is not None else [])
        self.dtype = first.train_pass.dtype
        self.head = first.train_pass.objective.name
        self._adopt_params()
        self.source = _stack([run.source for run in runs])
        self.scale = self.dtype.type(1.0 / 255.0 if first.source.dtype == np.uint8 else 1.0)
        self.kind = KINDS[first.noise_kernel]
        self.threshold = np.uint64(0 if self.kind == GAUSSIAN else noise_threshold(first.rate))
        self.sigma = float(first.rate) if self.kind == GAUSSIAN else 0.0
        self.labels = None
        if first.labels is not None:
            labels = np.stack([np.asarray(K.to_host(run.labels), np.int64) for run in runs])
            n_classes = first.train_pass.layers[-1].n_out
            if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
                raise IndexError("softmax_cross_entropy: label out of range [0, C)")
            self.labels = K.to_device(labels)
        L = max(1, len(self.trainable))
        self.cursor = K.zeros((1,), np.int64)
        self.loss = K.zeros((M,), np.float64)
        self.keys = K.zeros((M,), np.uint64)
        self.scales = K.to_device(np.ones((M, L), np.float64))
        self.partials = K.empty((L, M, 2 * _SS_BLOCKS), np.float64)
        self.order = self.starts = self.lrs = None
        self.work = {}  # batch length -> workspaces
        self.runners = {}  # batch length -> Graph or Tape
        self.velocities = {}
        self.capture = None

    # -- state ---------------------------------------------------------------------------

    def _adopt_params(self):
        """Each layer's (M, ...) stacks of W and b; every member's layer views its slice."""
        self.params = []
        for i in range(len(self.names)):
            layers = [p.layers[i] for p in self.passes]
            W, b = _stack([layer.W for layer in layers]), _stack([layer.b for layer in layers])
            for q, layer in enumerate(layers):
                layer.W, layer.b = W[q], b[q]
            self.params.append((W, b))
        self.bound = [(layer, layer.W, layer.b) for p in self.passes for layer in p.layers]
        self.optimisers, self.runners = None, {}

    def _still_bound(self):
        """Whether every member's layers still view this step's stacks (another step, or the
        member's own epochs, may have been given others meanwhile)."""
        return all(layer.W is W and layer.b is b for layer, W, b in self.bound)

    def _adopt_velocities(self, optimisers):
        """Stack the members' velocities and make each member's a view of its slice."""
        self.velocities = {}
        for i in self.trainable:
            name = self.names[i]
            for part, P in zip("Wb", self.params[i]):
                key = f"{name}.{part}"
                V = _stack([opt.velocity_of(K, key, P[q]) for q, opt in enumerate(optimisers)])
                for q, opt in enumerate(optimisers):
                    opt.velocity[key] = V[q]
                self.velocities[key] = V
        self.optimisers, self.runners = list(optimisers), {}

    def _workspaces(self, n):
        work = self.work.get(n)
        if work is None:
            M, dt = self.M, self.dtype
            D = self.source.shape[2]
            layers = self.runs[0].train_pass.layers
            work = {"X": K.empty((M, n, D), dt), "T": K.empty((M, n, D), dt),
                    "acts": [K.empty((M, n, layer.n_out), dt) for layer in layers],
                    "out": K.empty((M, n, layers[-1].n_out), dt),
                    "deltas": {i: K.empty((M, n, layers[i].n_out), dt)
                               for i in range(self.trainable[0] if self.trainable else
                                              len(layers) - 1, len(layers))},
                    "dW": {i: K.empty((M,) + tuple(layers[i].W.shape), dt)
                           for i in self.trainable},
                    "db": {i: K.empty((M, layers[i].n_out), dt) for i in self.trainable},
                    "row_loss": K.empty((M, n), np.float64),
                    "labels": K.empty((M, n), np.int64)}
            self.work[n] = work
        return work

    # -- recording -----------------------------------------------------------------------

    def record(self, n, optimiser):
        """The :class:`Tape` of one batched step on batches of ``n`` rows (``optimiser``:
        the first member's, for the constants the members share)."""
        t, w, M = Tape(), self._workspaces(n), self.M
        X, T = w["X"], w["T"]
        where = (self.order, self.starts, self.cursor, self.scale)
        noise = (self.keys, self.threshold, self.sigma)
        t.kernel(_gather_kernel, _blocks(X.size), _TPB, self.source, *where, self.kind, *noise, X)
        if self.labels is not None:
            target = w["labels"]
            t.kernel(_labels_kernel, _blocks(target.size), _TPB, self.labels, self.order,
                     self.starts, self.cursor, target)
        else:
            target = T
            t.kernel(_gather_kernel, _blocks(X.size), _TPB, self.source, *where, CLEAN, *noise,
                     T)
        acts, last = w["acts"], len(self.params) - 1
        A = X
        for i, (W, b) in enumerate(self.params):
            Z = acts[i]
            t.gemm(A, W, Z)
            t.kernel(_bias_sigmoid_kernel, _blocks(Z.size), _TPB, Z, b,
                     Z if i < last else w["out"])
            A = Z
        Z_out, deltas = acts[last], w["deltas"]
        if self.labels is not None:
            t.kernel(_softmax_ce_kernel, _blocks(M * n), _TPB, Z_out, target, deltas[last],
                     w["row_loss"])
        else:
            t.kernel(_sigmoid_ce_kernel, M * n, _RB, Z_out, target, deltas[last],
                     w["row_loss"])
        t.kernel(_accumulate_kernel, _blocks(M), _TPB, w["row_loss"], self.loss)
        dtype = self.dtype.type
        lowest = self.trainable[0] if self.trainable else len(self.params)
        for i in range(last, lowest - 1, -1):
            delta = deltas[i]
            below = X if i == 0 else acts[i - 1]
            trainable = i in self.trainable
            if trainable:
                col = self.trainable.index(i)
                dW, db = w["dW"][i], w["db"][i]
                t.kernel(_column_sum_kernel, _blocks(db.size), _TPB, delta, db)
                t.gemm(below, delta, dW, True, False)
                if optimiser.normalise_gradients:
                    self._record_norm(t, col, dW, db)
            if i > lowest:
                delta_below = deltas[i - 1]
                t.gemm(delta, self.params[i][0], delta_below, False, True)
                flat = delta_below.reshape(M * n, delta_below.shape[2])
                t.kernel(_sigmoid_backward_kernel, _blocks(flat.size), _TPB, flat,
                         below.reshape(M * n, below.shape[2]), flat)
            if trainable:
                name = self.names[i]
                for part, P, g, decay in (("W", self.params[i][0], dW, optimiser.weight_decay),
                                          ("b", self.params[i][1], db, 0.0)):
                    V = self.velocities[f"{name}.{part}"]
                    t.kernel(_sgd_kernel, _blocks(P.size), _TPB, _flat(P), _flat(g), _flat(V),
                             self.lrs, self.cursor, col, dtype(optimiser.momentum),
                             dtype(decay), self.scales)
        t.kernel(_advance_kernel, 1, 1, self.cursor)
        return t

    def _record_norm(self, t, col, dW, db):
        partial = self.partials[col]
        used = 0
        for g in (_flat(dW), _flat(db)):
            blocks = max(1, min(_SS_BLOCKS, (g.shape[1] + _RB - 1) // _RB))
            t.kernel(_sum_of_squares_kernel, (blocks, self.M), _RB, g,
                     partial[:, used:used + blocks])
            used += blocks
        t.kernel(_norm_scale_kernel, _blocks(self.M), _TPB, partial[:, :used], self.scales, col)

    # -- running -------------------------------------------------------------------------

    def _upload(self, requests):
        batches0 = requests[0][0]
        starts = batch_starts(batches0)
        names = [self.names[i] for i in self.trainable]
        order = np.stack([np.concatenate(batches).astype(np.int64)
                          for batches, _, _, _ in requests])
        lrs = np.stack([learning_rates(batches, optimiser, scales, names)
                        for batches, _, optimiser, scales in requests])
        keys = np.array([noise_epoch_key(run.seed, epoch)
                         for run, (_, epoch, _, _) in zip(self.runs, requests)], np.uint64)
        if (self.order is None or self.order.shape != order.shape
                or self.starts.shape != starts.shape):
            self.order, self.starts, self.lrs = (K.to_device(order), K.to_device(starts),
                                                 K.to_device(lrs))
            self.runners = {}
        else:
            self.order.copy_to_device(order)
            self.starts.copy_to_device(starts)
            self.lrs.copy_to_device(lrs)
        self.keys.copy_to_device(keys)
        self.cursor.copy_to_device(np.zeros(1, np.int64))
        self.loss.copy_to_device(np.zeros(self.M, np.float64))

    def epoch(self, requests):
        """One epoch of every member: ``requests[q] = (batches, epoch, optimiser, scales)``
        as :meth:`DeviceStep.epoch <medalpy.kernels.cuda_step.DeviceStep.epoch>` takes them
        (the members' batches have equal lengths). Returns the M loss sums."""
        optimisers = [request[2] for request in requests]
        if not self._still_bound():
            self._adopt_params()
        if (self.optimisers is None
                or any(a is not b for a, b in zip(optimisers, self.optimisers))
                or any(opt.velocity[key] is not V[q]
                       for key, V in self.velocities.items()
                       for q, opt in enumerate(optimisers))):
            self._adopt_velocities(optimisers)
        self._upload(requests)
        self.run_batches(requests[0][0], lambda n: self.record(n, optimisers[0]))
        return [float(x) for x in self.loss.copy_to_host()]

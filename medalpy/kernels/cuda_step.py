"""A training step that never leaves the GPU: recorded once, replayed every batch.

:meth:`medalpy.backprop.Pass.train_step` drives a step from the host: it uploads the batch's
row indices, reads the loss back (a synchronisation), computes normGrad's scale on the host
and passes the learning rate as a launch argument. At the paper's batch sizes that host work,
not the GPU, decides the speed (docs/gpu.md). :class:`DeviceStep` runs a phase's epochs so
that nothing per step crosses to the host:

    once per phase   workspaces, dW buffers and velocities allocated (the Pass's and SGD's)
    once per epoch   host -> device: the epoch's row order (N,) and batch starts (S + 1,), the
                     noise key of the epoch, each batch's learning rate per layer (S, L),
                     cursor = 0, loss = 0
    every batch      the recorded launches of a step of that length: gather and corrupt the
                     rows order[starts[cursor] + i], forward, loss added into a device
                     float64 sum, backward, normGrad's scale 1 / ||[dW; db]|| computed on the
                     device, SGD reading lr[cursor, layer] and the scale from device memory,
                     cursor += 1
    end of epoch     device -> host: the loss sum (one synchronisation)

Because every value that changes from step to step is read from device memory, the list of
launches of a step (a :class:`Tape`) is the same for every batch of a given length, so it can
be recorded once and replayed, and on a GPU captured as a CUDA graph and launched as one
unit. Capture needs matrix products that may run under stream capture: CuPy's cuBLAS wrappers
refuse to (cupy/cupy#6290), so captured products go through nvmath-python's cuBLAS bindings
(the ``cuda`` extra) on the capture stream. Where capture is unavailable (numba's CUDA
simulator, no nvmath-python, a capture error) the tape is replayed launch by launch, which is
still free of per-step host round trips, and the reason is said once (:func:`capture_status`).

The step is the one :meth:`Pass.train_step` takes, operation for operation: each layer's
``dW`` and ``db`` and the delta passed below it come from the weights the forward pass used,
then the layer is updated. Two differences in round-off only: ``dW`` is always stored (the
GPU has the memory), and normGrad's ``||dW||^2`` is summed from ``dW`` rather than from the
batch's Gram matrices. Without normGrad a replayed step equals an eager one bit for bit on
the CUDA simulator (tests/kernels/cuda_sim_cases.py); on a GPU, cuBLAS may choose other
kernels for the capture's handle than for CuPy's, so captured and eager steps may differ in
round-off.
"""

import math
import warnings

import numpy as np
from numba import cuda

from medalpy import config
from medalpy.config import noise_epoch_key, noise_threshold
from medalpy.kernels import cuda as K
from medalpy.kernels.cuda import (
    _RB,
    _SS_BLOCKS,
    _TPB,
    CLEAN,
    GAUSSIAN,
    MASKING,
    SALT_PEPPER,
    _bias_sigmoid_kernel,
    _blocks,
    _column_sum_kernel,
    _flat,
    _mix,
    _sigmoid_backward_kernel,
    _sigmoid_ce_kernel,
    _softmax_ce_kernel,
    _sum_of_squares_kernel,
    _uniform,
)

#: The corruption kernels of :mod:`medalpy.corruption` as kinds of :func:`_gather_at_kernel`.
KINDS = {"gather_masked": MASKING, "gather_salt_pepper": SALT_PEPPER,
         "gather_gaussian": GAUSSIAN}
_TWO_PI = 2.0 * math.pi

# ----------------------------------------------------------------------------------------
# Kernels that read the step's varying values from device memory.
# ----------------------------------------------------------------------------------------


@cuda.jit(device=True)
def _corrupt(v, r, j, kind, key, threshold, sigma, out):
    """``v`` (sample ``r``, feature ``j``, in ``out``'s dtype) corrupted as the reference's
    gather_<kind> with the epoch's noise key ``key``: the masks of cuda._gather_kernel and
    cuda._gaussian_kernel. Shared by the single-model and the cohorts' gathers."""
    if kind != CLEAN:
        h = _mix(_mix(key ^ np.uint64(r)) ^ np.uint64(j))
        if kind == GAUSSIAN:
            u1, u2 = _uniform(h), _uniform(_mix(h))
            z = sigma * (math.sqrt(-2.0 * math.log(u1)) * math.cos(_TWO_PI * u2))
            v = min(max(v + out.dtype.type(z), out.dtype.type(0)), out.dtype.type(1))
        elif (h >> np.uint64(config.U64_SHIFT)) < threshold:
            v = v * out.dtype.type(0) if kind == MASKING else out.dtype.type(h & np.uint64(1))
    return v


@cuda.jit
def _gather_at_kernel(X, order, starts, cursor, scale, kind, keys, threshold, sigma, out):
    # The batch's rows order[starts[cursor] + i] and the epoch's noise key keys[0] read here.
    idx = cuda.grid(1)
    n, d = out.shape
    if idx < n * d:
        i = idx // d
        j = idx - i * d
        r = order[starts[cursor[0]] + i]
        v = out.dtype.type(X[r, j]) * scale
        out[i, j] = _corrupt(v, r, j, kind, keys[0], threshold, sigma, out)


@cuda.jit
def _labels_at_kernel(y, order, starts, cursor, out):
    i = cuda.grid(1)
    if i < out.shape[0]:
        out[i] = y[order[starts[cursor[0]] + i]]


@cuda.jit
def _accumulate_kernel(row_loss, total):
    # One thread: the batch's row losses added to the epoch's float64 sum, in row order.
    if cuda.grid(1) == 0:
        s = 0.0
        for i in range(row_loss.shape[0]):
            s += row_loss[i]
        total[0] += s


@cuda.jit
def _norm_scale_kernel(partial, scales, slot):
    # MEDAL's normGrad factor from the partial sums of ||dW||^2 and ||db||^2 (optim.SGD._scale).
    if cuda.grid(1) == 0:
        s = 0.0
        for i in range(partial.shape[0]):
            s += partial[i]
        scales[slot] = 1.0 / math.sqrt(s) if s > 0.0 else 1.0


@cuda.jit
def _sgd_at_kernel(p, g, v, lrs, cursor, col, momentum, decay, scales, slot):
    # cuda._sgd_kernel with the batch's learning rate and normGrad scale read from device
    # memory (rounded to the parameter's dtype as the host's launch arguments are).
    i = cuda.grid(1)
    if i < p.shape[0]:
        lr = p.dtype.type(lrs[cursor[0], col])
        scale = p.dtype.type(scales[slot])
        vi = momentum * v[i] + lr * (scale * g[i] + decay * p[i])
        v[i] = vi
        p[i] = p[i] - vi


@cuda.jit
def _advance_kernel(cursor):
    if cuda.grid(1) == 0:
        cursor[0] += 1


# ----------------------------------------------------------------------------------------
# A step as data: the tape, replayed or captured.
# ----------------------------------------------------------------------------------------


class Tape:
    """The launches of one step, in order, with their arguments (device arrays and constants).

    ``ops`` holds ``("kernel", kernel, grid, block, args)`` and ``("gemm", A, B, out,
    trans_a, trans_b)``: ``out = op(A) @ op(B)``.
    """

    def __init__(self):
        self.ops = []

    def kernel(self, kernel, grid, block, *args):
        self.ops.append(("kernel", kernel, grid, block, args))

    def gemm(self, A, B, out, trans_a=False, trans_b=False):
        self.ops.append(("gemm", A, B, out, trans_a, trans_b))

    def replay(self):
        """Launch every op eagerly, in order, on the default stream."""
        for op in self.ops:
            if op[0] == "kernel":
                _, kernel, grid, block, args = op
                kernel[grid, block](*args)
            else:
                K._gemm(*op[1:])


class CaptureUnavailable(RuntimeError):
    """Stream capture cannot be used here; the message says why."""


_said = {}


def capture_status():
    """Why tapes are replayed launch by launch rather than as CUDA graphs (None: they are
    captured, or nothing has been recorded yet)."""
    return _said.get("reason")


def _say_once(reason):
    if "reason" not in _said:
        _said["reason"] = reason
        warnings.warn(f"cuda: training steps run as recorded launches, not CUDA graphs: {reason}",
                      RuntimeWarning, stacklevel=3)


class _CaptureBlas:
    """cuBLAS through nvmath-python's bindings on one stream: usable under stream capture."""

    def __init__(self, stream_ptr):
        try:
            from nvmath.bindings import cublas
        except ImportError as exc:
            raise CaptureUnavailable(f"nvmath-python is not installed ({exc}); "
                                     "pip install 'medalpy[cuda]'") from exc
        self.cublas = cublas
        self.handle = cublas.create()
        cublas.set_stream(self.handle, stream_ptr)
        # A workspace of its own (what NVIDIA advises for Hopper), so that no call allocates
        # while a graph is being captured.
        self.workspace = cuda.device_array(32 << 20, dtype=np.uint8)
        if hasattr(cublas, "set_workspace"):
            cublas.set_workspace(self.handle, self.workspace.device_ctypes_pointer.value,
                                 self.workspace.size)
        self.one = {c: np.ones(1, c) for c in "fd"}
        self.zero = {c: np.zeros(1, c) for c in "fd"}
        self.fn = {"f": cublas.sgemm, "d": cublas.dgemm}
        self.batched = {"f": cublas.sgemm_strided_batched, "d": cublas.dgemm_strided_batched}

    def __call__(self, A, B, out, trans_a, trans_b):
        # Row-major operands as column-major transposes, as cuda._Cublas does.
        args = K._gemm_args(A, B, out, trans_a, trans_b)
        if args is None:
            raise CaptureUnavailable("an empty matrix product cannot be captured")
        op_b, op_a, m, n, k, (pb, ldb, sb), (pa, lda, sa), (pc, ldc, sc), batch = args
        c = out.dtype.char
        one, zero = self.one[c].ctypes.data, self.zero[c].ctypes.data
        if out.ndim == 3:
            self.batched[c](self.handle, op_b, op_a, m, n, k, one, pb, ldb, sb, pa, lda, sa,
                            zero, pc, ldc, sc, batch)
        else:
            self.fn[c](self.handle, op_b, op_a, m, n, k, one, pb, ldb, pa, lda, zero, pc, ldc)


class Capture:
    """The stream, cuBLAS handle and numba view of the stream that every captured graph of
    this process shares (:func:`shared_capture`), so that graphs run in order among
    themselves and no handle is made per phase."""

    def __init__(self):
        if K.SIMULATOR:
            raise CaptureUnavailable("numba's CUDA simulator has no stream capture")
        if config.CUDA_STEP != "graph":
            raise CaptureUnavailable(f"MEDALPY_CUDA_STEP is {config.CUDA_STEP!r}, not 'graph'")
        try:
            import cupy
            self.cupy = cupy
            self.stream = cupy.cuda.Stream(non_blocking=True)
            self.blas = _CaptureBlas(self.stream.ptr)
            self.numba_stream = cuda.external_stream(self.stream.ptr)
        except CaptureUnavailable:
            raise
        except Exception as exc:  # CuPy missing, a library that fails to load, ...
            raise CaptureUnavailable(f"cannot set up capture ({type(exc).__name__}: {exc})") \
                from exc

    def graph(self, tape):
        """``tape`` captured (not run) as a :class:`Graph` on this stream."""
        runtime = self.cupy.cuda.runtime
        mode = getattr(runtime, "streamCaptureModeThreadLocal", None)
        try:
            # No cuMemFree from numba's deferred deallocations (a garbage collection) while
            # the stream captures: it is not allowed then, and would invalidate the capture.
            with cuda.defer_cleanup():
                self.stream.begin_capture(*(() if mode is None else (mode,)))
                try:
                    for op in tape.ops:
                        if op[0] == "kernel":
                            _, kernel, grid, block, args = op
                            kernel[grid, block, self.numba_stream](*args)
                        else:
                            self.blas(*op[1:])
                finally:
                    graph = self.stream.end_capture()
            if hasattr(graph, "upload"):
                graph.upload(self.stream)
        except Exception as exc:  # a driver or library that refuses some launch under capture
            raise CaptureUnavailable(
                f"stream capture failed ({type(exc).__name__}: {exc})") from exc
        return Graph(graph, self, tape)

    def synchronize(self):
        self.stream.synchronize()


class Graph:
    """A captured step: :meth:`replay` launches it as one unit on its capture's stream."""

    def __init__(self, graph, capture, tape):
        self.graph, self.capture = graph, capture
        self.tape = tape  # the graph refers to the memory of the tape's arrays

    def replay(self):
        self.graph.launch(self.capture.stream)


_shared = {}


def shared_capture():
    """This process's :class:`Capture`, made at first use; raises :class:`CaptureUnavailable`
    (the same reason every time) where capture cannot be used."""
    if "capture" not in _shared:
        try:
            _shared["capture"] = Capture()
        except CaptureUnavailable as exc:
            _shared["capture"] = exc
    if isinstance(_shared["capture"], CaptureUnavailable):
        raise _shared["capture"]
    return _shared["capture"]


# ----------------------------------------------------------------------------------------
# A phase's epochs on the device.
# ----------------------------------------------------------------------------------------


def batch_starts(batches):
    """``(S + 1,)`` int64 offsets of each batch in the epoch's concatenated row order."""
    starts = np.zeros(len(batches) + 1, np.int64)
    np.cumsum([len(rows) for rows in batches], out=starts[1:])
    return starts


def learning_rates(batches, optimiser, scales, names):
    """``(S, max(1, L))`` float64: each batch's learning rate for each named layer, as
    ``optimiser.layer_lr`` gives it with the batch's ``scales`` (None: no multipliers) set."""
    lrs = np.empty((len(batches), max(1, len(names))), np.float64)
    for s in range(len(batches)):
        if scales is not None:
            optimiser.lr_scale = scales[s]
        lrs[s, :len(names)] = [optimiser.layer_lr(name) for name in names]
    return lrs


class Recorded:
    """What :class:`DeviceStep` and the cohorts' batched step share: a step per batch length,
    recorded once (``record(n)``), run eagerly the first time and then captured as a graph
    or, where capture is unavailable, replayed launch by launch. Subclasses set
    ``runners = {}`` and ``capture = None``; recorded steps are forgotten when the arrays they
    launch on change (:meth:`_recorded_on`)."""

    def _capture(self, tape):
        """``tape`` as a :class:`Graph`, or the tape itself where capture is unavailable."""
        try:
            if self.capture is None:
                self.capture = shared_capture()
            return self.capture.graph(tape)
        except CaptureUnavailable as exc:
            _say_once(str(exc))
            return tape

    def _recorded_on(self, arrays):
        """Forget the recorded steps when the arrays they launch on are no longer the ones
        given (``arrays``: what a step reads and writes that others may replace, such as a
        layer's weights made a view of a cohort's stack)."""
        fingerprint = tuple(id(a) for a in arrays)
        if fingerprint != getattr(self, "_fingerprint", None):
            self.runners, self._fingerprint = {}, fingerprint

    def run_batches(self, batches, record):
        """One step per batch of ``batches``, in order, each from the runner of its length.

        A length's first step is recorded and run launch by launch (compiling what it
        launches), then captured; graphs run on the capture's stream and eager launches on
        the default one, so the two are synchronised where they alternate. Returns when the
        device has finished.
        """
        cuda.synchronize()  # the epoch's uploads and earlier eager work, before any graph
        on_graph = False  # what ran last: a graph (True) or eager launches
        for rows in batches:
            runner = self.runners.get(len(rows))
            graph = isinstance(runner, Graph)
            if on_graph and not graph:
                self.capture.synchronize()
            elif graph and not on_graph:
                cuda.synchronize()
            if runner is None:
                tape = record(len(rows))
                tape.replay()
                self.runners[len(rows)] = self._capture(tape)
            else:
                runner.replay()
            on_graph = graph
        if on_graph:
            self.capture.synchronize()


class DeviceStep(Recorded):
    """Train a :class:`medalpy.backprop.Pass` epoch by epoch without per-step host work.

    Parameters
    ----------
    train_pass : the phase's :class:`Pass` (its workspaces and layers are the step's).
    source : (N, D) device array, the phase's inputs (uint8 images or float codes).
    X_in, X_target : (B, D) device workspaces for the corrupted batch and its clean target.
    labels : (N,) int labels of a supervised phase (host or device), or None.
    noise_kernel : the corruption's kernel name (``medalpy.corruption``), e.g. ``gather_masked``.
    rate : the noise level; ``noise_seed``: the phase's noise seed (:func:`trainer.noise_seed`).
    """

    def __init__(self, train_pass, source, X_in, X_target, labels, noise_kernel, rate,
                 noise_seed):
        self.pass_ = train_pass
        self.source, self.X_in, self.X_target = source, X_in, X_target
        self.kind = KINDS[noise_kernel]
        self.threshold = np.uint64(0 if self.kind == GAUSSIAN else noise_threshold(rate))
        self.sigma = float(rate) if self.kind == GAUSSIAN else 0.0
        self.scale = X_in.dtype.type(1.0 / 255.0 if source.dtype == np.uint8 else 1.0)
        self.noise_seed = noise_seed
        B = train_pass.batch_size
        self.labels = None
        if labels is not None:
            labels = np.asarray(K.to_host(labels), dtype=np.int64)
            n_classes = train_pass.layers[-1].n_out
            if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
                raise IndexError("softmax_cross_entropy: label out of range [0, C)")
            self.labels = K.to_device(labels)
            self.batch_labels = K.empty((B,), np.int64)
        self.trainable = list(train_pass.trainable) if train_pass.lowest is not None else []
        self.cursor = K.zeros((1,), np.int64)
        self.loss = K.zeros((1,), np.float64)
        self.keys = K.zeros((1,), np.uint64)
        self.row_loss = K.empty((B,), np.float64)
        self.scales = K.to_device(np.ones(max(1, len(self.trainable)), np.float64))
        self.partials = K.empty((2 * _SS_BLOCKS * max(1, len(self.trainable)),), np.float64)
        self.order = self.starts = self.lrs = None
        self.runners = {}  # batch length -> Graph or Tape
        self.optimiser = None
        self.capture = None  # this process's Capture, once a graph was made

    # -- recording -----------------------------------------------------------------------

    def record(self, n, optimiser):
        """The :class:`Tape` of one step on a batch of ``n`` rows."""
        p, t = self.pass_, Tape()
        X, T = self.X_in[:n], self.X_target[:n]
        d = X.shape[1]
        args = (self.order, self.starts, self.cursor, self.scale)
        noise = (self.keys, self.threshold, self.sigma)
        t.kernel(_gather_at_kernel, _blocks(n * d), _TPB, self.source, *args, self.kind, *noise, X)
        if self.labels is not None:
            target = self.batch_labels[:n]
            t.kernel(_labels_at_kernel, _blocks(n), _TPB, self.labels, self.order, self.starts,
                     self.cursor, target)
        else:
            target = T
            t.kernel(_gather_at_kernel, _blocks(n * d), _TPB, self.source, *args, CLEAN,
                     *noise, T)
        forward, Z_out, delta_out, backward = p._plan(n)
        A = X
        for layer, Z, H in forward:
            t.gemm(A, layer.W, Z)
            t.kernel(_bias_sigmoid_kernel, _blocks(Z.size), _TPB, Z, layer.b, H)
            A = Z
        row_loss = self.row_loss[:n]
        if self.labels is not None:
            t.kernel(_softmax_ce_kernel, _blocks(n), _TPB, Z_out, target, delta_out, row_loss)
        else:
            t.kernel(_sigmoid_ce_kernel, n, _RB, Z_out, target, delta_out, row_loss)
        t.kernel(_accumulate_kernel, 1, 1, row_loss, self.loss)
        grads = p.grads if self.trainable else {}
        dtype = X.dtype.type
        for i, delta, below, down in backward:
            A = X if below is None else below
            if i in grads:
                dW, db = grads[i]
                t.kernel(_column_sum_kernel, _blocks(db.shape[0]), _TPB, delta, db)
                t.gemm(A, delta, dW, True, False)
                if optimiser.normalise_gradients:
                    self._record_norm(t, self.trainable.index(i), dW, db)
            if down is not None:
                layer, delta_below = down
                t.gemm(delta, layer.W, delta_below, False, True)
                t.kernel(_sigmoid_backward_kernel, _blocks(delta_below.size), _TPB, delta_below,
                         below, delta_below)
            if i in grads:
                col = self.trainable.index(i)
                name, layer = p.names[i], p.layers[i]
                for part, g, decay in (("W", dW, optimiser.weight_decay), ("b", db, 0.0)):
                    P = getattr(layer, part)
                    V = optimiser.velocity_of(K, f"{name}.{part}", P)
                    t.kernel(_sgd_at_kernel, _blocks(P.size), _TPB, _flat(P), _flat(g), _flat(V),
                             self.lrs, self.cursor, col, dtype(optimiser.momentum), dtype(decay),
                             self.scales, col)
        t.kernel(_advance_kernel, 1, 1, self.cursor)
        return t

    def _record_norm(self, t, col, dW, db):
        base = 2 * _SS_BLOCKS * col
        used = 0
        for g in (_flat(dW), _flat(db)):
            blocks = max(1, min(_SS_BLOCKS, (g.shape[0] + _RB - 1) // _RB))
            t.kernel(_sum_of_squares_kernel, blocks, _RB, g,
                     self.partials[base + used:base + used + blocks])
            used += blocks
        t.kernel(_norm_scale_kernel, 1, 1, self.partials[base:base + used], self.scales, col)

    # -- running -------------------------------------------------------------------------

    def _arrays(self, optimiser):
        """The parameters and velocities a step updates (a cohort may replace them)."""
        arrays = [optimiser]
        for i in self.trainable:
            name, layer = self.pass_.names[i], self.pass_.layers[i]
            arrays += [layer.W, layer.b, optimiser.velocity_of(K, f"{name}.W", layer.W),
                       optimiser.velocity_of(K, f"{name}.b", layer.b)]
        return arrays + [layer.W for layer in self.pass_.layers]

    def _upload(self, batches, epoch, optimiser, scales):
        """The epoch's values into device memory (allocated at the first epoch)."""
        order = np.concatenate(batches).astype(np.int64)
        starts = batch_starts(batches)
        lrs = learning_rates(batches, optimiser, scales,
                             [self.pass_.names[i] for i in self.trainable])
        if (self.order is None or self.order.shape != order.shape
                or self.starts.shape != starts.shape):
            self.order, self.starts = K.to_device(order), K.to_device(starts)
            self.lrs = K.to_device(lrs)
            self.runners = {}  # tapes refer to the arrays they were recorded with
        else:
            self.order.copy_to_device(order)
            self.starts.copy_to_device(starts)
            self.lrs.copy_to_device(lrs)
        self.keys.copy_to_device(np.array([noise_epoch_key(self.noise_seed, epoch)], np.uint64))
        self.cursor.copy_to_device(np.zeros(1, np.int64))
        self.loss.copy_to_device(np.zeros(1, np.float64))

    def epoch(self, batches, epoch, optimiser, scales=None):
        """Train one epoch on ``batches`` (lists of row indices into ``source``).

        ``scales``: optional per-batch ``{layer name: learning-rate multiplier}`` (lower
        layers' m(t)); ``optimiser``: the phase's :class:`medalpy.optim.SGD`, whose velocities
        the step updates. Returns the sum over rows of the loss (float).
        """
        self.optimiser = optimiser
        self._upload(batches, epoch, optimiser, scales)
        self._recorded_on(self._arrays(optimiser))
        self.run_batches(batches, lambda n: self.record(n, optimiser))
        return float(self.loss.copy_to_host()[0])

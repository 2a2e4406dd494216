"""The ``cuda`` backend's kernels against the NumPy reference, on numba's CUDA simulator.

Not collected by the main pytest run (the name does not start with ``test_``):
``tests/kernels/test_cuda_sim.py`` runs this file in a fresh interpreter with
``NUMBA_ENABLE_CUDASIM=1``, which numba reads when ``numba.cuda`` is first imported. Run it
by hand the same way::

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/kernels/cuda_sim_cases.py

The simulator runs every thread of a block as a Python thread, so shapes are tiny. Matrix
products take the backend's host stand-in (``np.matmul`` on the simulator's host-backed
arrays); cuBLAS itself is exercised by ``benchmarks/gpu_check.py`` on a real GPU. The
simulator evaluates ``math.exp``/``math.log1p`` in float64 and rounds once to the array's
dtype, so float32 results may differ from the reference by an ulp or two; products without
transcendental functions (gather, masks, sigmoid_backward, column_sum, sgd_update, argmax)
must agree exactly.
"""

import os

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("run under NUMBA_ENABLE_CUDASIM=1 (see test_cuda_sim.py)", allow_module_level=True)

from medalpy.backprop import Pass, encode  # noqa: E402
from medalpy.kernels import get_backend  # noqa: E402
from medalpy.kernels import reference as ref  # noqa: E402
from medalpy.network import Layer  # noqa: E402
from medalpy.optim import SGD  # noqa: E402

K = get_backend("cuda")
DTYPES = [np.float32, np.float64]
EDGE = [0.0, 40.0, -40.0, 100.0, -100.0]


def _tol(dtype):
    return dict(rtol=1e-12, atol=1e-300) if dtype == np.float64 else dict(rtol=2e-6, atol=1e-30)


def _preacts(rng, B, D, dtype):
    """Random pre-activations with edge rows: zeros, +-40, +-100, and all of them mixed."""
    Z = rng.normal(0.0, 6.0, size=(B, D))
    for i, v in enumerate(EDGE):
        Z[i] = v
    Z[5] = np.resize(EDGE, D)
    return Z.astype(dtype)


def _targets(rng, B, D, dtype):
    T = rng.random((B, D))
    T[rng.random((B, D)) < 0.3] = 0.0
    T[rng.random((B, D)) < 0.2] = 1.0
    T[-1] = 0.0
    return T.astype(dtype)


def test_simulator_and_host_gemm_in_use():
    assert K.NAME == "cuda" and K.SIMULATOR
    K.matmul(K.zeros((1, 1), np.float32), K.zeros((1, 1), np.float32), K.empty((1, 1), np.float32))
    assert K._gemm_impl is K._gemm_host


@pytest.mark.parametrize("dtype", DTYPES)
def test_arrays_round_trip(dtype):
    a = np.arange(12, dtype=dtype).reshape(3, 4)
    d = K.to_device(a)
    assert K.to_device(d) is d  # no copy for a device array
    np.testing.assert_array_equal(K.to_host(d), a)
    z = K.zeros((2, 5), dtype)
    assert z.shape == (2, 5) and np.dtype(z.dtype) == np.dtype(dtype)
    np.testing.assert_array_equal(K.to_host(z), np.zeros((2, 5), dtype))
    e = K.empty((4,), dtype)
    assert e.shape == (4,) and np.dtype(e.dtype) == np.dtype(dtype)
    np.testing.assert_array_equal(K.to_host(a), a)  # host arrays pass through


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", ["device", "host"])
def test_gather_uint8_and_float(dtype, where):
    rng = np.random.default_rng(1)
    X8 = rng.integers(0, 256, size=(9, 7), dtype=np.uint8)
    Xf = rng.random((9, 7)).astype(dtype)
    rows = np.array([4, 0, 8, 4])
    for X in (X8, Xf):
        src = K.to_device(X) if where == "device" else X
        want = np.empty((4, 7), dtype)
        ref.gather(X, rows, want)
        out = K.empty((4, 7), dtype)
        K.gather(src, rows, out)
        np.testing.assert_array_equal(K.to_host(out), want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", ["device", "host"])
@pytest.mark.parametrize("seed,epoch", [(0, 0), (12345, 3), (2**63 + 5, 2**40)])
def test_gather_masked_equals_reference_and_masks_match(dtype, where, seed, epoch):
    rng = np.random.default_rng(2)
    N, D = 11, 13
    X = rng.integers(1, 256, size=(N, D), dtype=np.uint8)  # no zero pixels: 0 means masked
    rows = rng.permutation(N)[:5]
    src = K.to_device(X) if where == "device" else X
    want = np.empty((5, D), dtype)
    ref.gather_masked(X, rows, 0.3, seed, epoch, want)
    out = K.empty((5, D), dtype)
    K.gather_masked(src, rows, 0.3, seed, epoch, out)
    got = K.to_host(out)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got != 0, ref.keep_mask(seed, epoch, rows, D, 0.3))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", ["device", "host"])
@pytest.mark.parametrize("kernel, level", [("gather_salt_pepper", 0.4),
                                           ("gather_gaussian", 0.3)])
def test_other_noise_kinds_equal_the_reference(dtype, where, kernel, level):
    rng = np.random.default_rng(3)
    N, D = 11, 13
    X = rng.integers(0, 256, size=(N, D), dtype=np.uint8)
    rows = rng.permutation(N)[:5]
    src = K.to_device(X) if where == "device" else X
    want = np.empty((5, D), dtype)
    getattr(ref, kernel)(X, rows, level, 99, 4, want)
    out = K.empty((5, D), dtype)
    getattr(K, kernel)(src, rows, level, 99, 4, out)
    # The simulator's log/cos are Python's: the Gaussian noise may differ in its last bit.
    np.testing.assert_allclose(K.to_host(out), want, **_tol(dtype))
    assert not np.array_equal(want, X[rows] / 255.0)  # the noise did something


def test_gather_masked_device_rows_and_batch_independence():
    X = K.to_device(np.full((6, 10), 255, np.uint8))
    rows = np.array([5, 1, 3])
    whole = K.empty((3, 10), np.float32)
    K.gather_masked(X, K.to_device(rows), 0.5, 7, 2, whole)
    one = K.empty((1, 10), np.float32)
    K.gather_masked(X, rows[1:2], 0.5, 7, 2, one)  # the same sample alone in its batch
    np.testing.assert_array_equal(K.to_host(one)[0], K.to_host(whole)[1])
    np.testing.assert_array_equal(K.to_host(whole) != 0, ref.keep_mask(7, 2, rows, 10, 0.5))


def test_gather_rejects_bad_rows_and_negative_seed():
    X = K.to_device(np.zeros((4, 3), np.uint8))
    out = K.empty((1, 3), np.float32)
    for bad in ([4], [-1]):
        with pytest.raises(IndexError):
            K.gather(X, np.array(bad), out)
    with pytest.raises(IndexError):
        K.gather(np.zeros((4, 3), np.uint8), np.array([4]), out)
    with pytest.raises((OverflowError, ValueError)):
        K.gather_masked(X, np.array([0]), 0.1, -1, 0, out)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_variants(dtype):
    rng = np.random.default_rng(3)
    A = rng.normal(size=(3, 5)).astype(dtype)
    W = rng.normal(size=(5, 4)).astype(dtype)
    G = rng.normal(size=(3, 4)).astype(dtype)
    for fn, a, b, shape in ((ref.matmul, A, W, (3, 4)), (ref.matmul_tn, A, G, (5, 4)),
                            (ref.matmul_nt, G, W, (3, 5))):
        want = np.empty(shape, dtype)
        fn(a, b, want)
        out = K.empty(shape, dtype)
        getattr(K, fn.__name__)(K.to_device(a), K.to_device(b), out)
        np.testing.assert_allclose(K.to_host(out), want, rtol=1e-6 if dtype == np.float32
                                   else 1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("in_place", [False, True])
def test_add_bias_sigmoid(dtype, in_place):
    rng = np.random.default_rng(4)
    Z = _preacts(rng, 7, 6, dtype)
    b = rng.normal(size=6).astype(dtype)
    b[:2] = 0.0
    Zr, outr = Z.copy(), np.empty_like(Z)
    ref.add_bias_sigmoid(Zr, b, outr)
    Zd = K.to_device(Z)
    outd = Zd if in_place else K.empty(Z.shape, dtype)
    K.add_bias_sigmoid(Zd, K.to_device(b), outd)
    np.testing.assert_allclose(K.to_host(outd), outr, **_tol(dtype))
    if not in_place:
        np.testing.assert_array_equal(K.to_host(Zd), Zr)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alias", [None, "Z", "T"])
def test_sigmoid_cross_entropy(dtype, alias):
    rng = np.random.default_rng(5)
    B, D = 7, 12
    Z, T = _preacts(rng, B, D, dtype), _targets(rng, B, D, dtype)
    dr = np.empty_like(Z)
    want = ref.sigmoid_cross_entropy(Z, T, dr)
    Zd, Td = K.to_device(Z), K.to_device(T)
    dd = {"Z": Zd, "T": Td}.get(alias) or K.empty(Z.shape, dtype)
    got = K.sigmoid_cross_entropy(Zd, Td, dd)
    assert isinstance(got, float)
    assert got == pytest.approx(want, rel=1e-6 if dtype == np.float32 else 1e-12)
    eps = float(np.finfo(dtype).eps)
    np.testing.assert_allclose(K.to_host(dd), dr, rtol=4 * eps, atol=4 * eps / B)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("labels_on", ["host", "device"])
def test_softmax_cross_entropy(dtype, labels_on):
    rng = np.random.default_rng(6)
    Z = rng.normal(0.0, 3.0, size=(5, 4)).astype(dtype)
    Z[0] = [1000.0, -1000.0, 0.0, 999.0]  # large logits must not overflow
    Z[1] = 0.0
    y = np.array([0, 3, 2, 1, 1])
    dr = np.empty_like(Z)
    want = ref.softmax_cross_entropy(Z, y, dr)
    dd = K.empty(Z.shape, dtype)
    labels = K.to_device(y) if labels_on == "device" else y
    got = K.softmax_cross_entropy(K.to_device(Z), labels, dd)
    assert got == pytest.approx(want, rel=1e-6 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(K.to_host(dd), dr, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=float(np.finfo(dtype).eps))
    with pytest.raises(IndexError):
        K.softmax_cross_entropy(K.to_device(Z), np.array([0, 4, 0, 0, 0]), dd)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_predict_with_ties_and_nan(dtype):
    Z = np.array([[0, 2, 2], [5, 1, 0], [0, np.nan, 9], [np.nan, 1, 2]], dtype)
    want = np.empty(4, np.int64)
    ref.softmax_predict(Z, want)
    out = K.empty((4,), np.int64)
    K.softmax_predict(K.to_device(Z), out)
    np.testing.assert_array_equal(K.to_host(out), want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_backward_column_sum(dtype):
    rng = np.random.default_rng(7)
    dH = rng.normal(size=(3, 9)).astype(dtype)
    H = rng.random((3, 9)).astype(dtype)
    H[0] = 0.0
    H[1] = 1.0
    want = np.empty_like(dH)
    ref.sigmoid_backward(dH, H, want)
    dHd = K.to_device(dH)
    K.sigmoid_backward(dHd, K.to_device(H), dHd)  # out aliases dH
    np.testing.assert_array_equal(K.to_host(dHd), want)
    for B in (1, 3):
        wsum = np.empty(9, dtype)
        ref.column_sum(dH[:B], wsum)
        out = K.empty((9,), dtype)
        K.column_sum(K.to_device(dH)[:B], out)
        np.testing.assert_array_equal(K.to_host(out), wsum)


@pytest.mark.parametrize("dtype", DTYPES)
def test_product_sq_norm(dtype):
    rng = np.random.default_rng(12)
    for n, k, m in ((6, 40, 30), (1, 5, 3)):
        A = rng.random((n, k)).astype(dtype)
        delta = rng.normal(size=(n, m)).astype(dtype)
        got = K.product_sq_norm(K.to_device(A), K.to_device(delta))
        # The Gram matrices are computed in the arrays' dtype: each term within a few ulps
        # of the magnitudes summed.
        A64, d64 = A.astype(np.float64), delta.astype(np.float64)
        magnitude = float(np.sum(np.abs(A64 @ A64.T) * np.abs(d64 @ d64.T)))
        bound = 4 * (k + m) * np.finfo(dtype).eps * magnitude
        assert isinstance(got, float)
        assert abs(got - ref.product_sq_norm(A, delta)) <= bound


@pytest.mark.parametrize("dtype", DTYPES)
def test_sum_of_squares_and_sgd_update(dtype):
    rng = np.random.default_rng(8)
    for shape in ((5, 7), (7,), (300,)):
        G = rng.normal(size=shape).astype(dtype)
        assert K.sum_of_squares(K.to_device(G)) == pytest.approx(ref.sum_of_squares(G),
                                                                 rel=1e-13)
        P, V = rng.normal(size=shape).astype(dtype), rng.normal(size=shape).astype(dtype)
        Pr, Vr = P.copy(), V.copy()
        t = np.dtype(dtype).type
        ref.sgd_update(Pr, G, Vr, t(0.1), t(0.9), t(1e-3), t(0.5))
        Pd, Vd = K.to_device(P), K.to_device(V)
        K.sgd_update(Pd, K.to_device(G), Vd, 0.1, 0.9, 1e-3, 0.5)
        # A GPU may contract a*b + c into one fused multiply-add: each result within a few
        # ulps of the magnitudes it was computed from (not of itself: P - V cancels where P
        # and V are close, as one element did on an H200 with a 2e-6 relative tolerance).
        eps = np.finfo(dtype).eps
        np.testing.assert_array_less(np.abs(K.to_host(Vd) - Vr),
                                     4 * eps * (np.abs(V) + np.abs(G) + np.abs(P)) + 1e-300)
        np.testing.assert_array_less(np.abs(K.to_host(Pd) - Pr),
                                     4 * eps * (np.abs(P) + np.abs(Vr)) + 1e-300)


def _chain(rng, sizes, dtype, backend):
    layers = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        W = rng.uniform(-0.5, 0.5, size=(n_in, n_out)).astype(dtype)
        b = rng.normal(0.0, 0.1, size=n_out).astype(dtype)
        layers.append(Layer(backend.to_device(W), backend.to_device(b)))
    return [(f"encoder.{i}", layer) for i, layer in enumerate(layers)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("normalise", [False, True])
@pytest.mark.parametrize("form", ["backward", "train_step"])
def test_pass_and_sgd_on_device_match_numpy(dtype, normalise, form):
    """Two SGD steps of a 6-4-3-6 chain (lowest layer frozen): device arrays end to end, as
    backward() + SGD.step and as the trainer's train_step (on the device, normGrad's norms
    never reach the host)."""
    sizes, B = [6, 4, 3, 6], 3
    results = {}
    for name in ("numpy", "cuda"):
        k = get_backend(name)
        rng = np.random.default_rng(9)
        chain = _chain(rng, sizes, dtype, k)
        chain[0][1].trainable = False
        X = k.to_device(np.random.default_rng(10).integers(0, 256, (8, 6), dtype=np.uint8))
        p = Pass(k, chain, B, "decoder", dtype)
        opt = SGD(lr=0.1, momentum=0.9, weight_decay=1e-3, normalise_gradients=normalise)
        X_in, T = k.empty((B, 6), dtype), k.empty((B, 6), dtype)
        losses = []
        for step, rows in enumerate((np.array([0, 5, 2]), np.array([7, 1]))):
            n = len(rows)
            k.gather_masked(X, rows, 0.25, 3, step, X_in[:n])
            k.gather(X, rows, T[:n])
            if form == "train_step":
                losses.append(p.train_step(X_in[:n], T[:n], opt))
            else:
                losses.append(p.backward(X_in[:n], T[:n]))
                opt.step(k, p.named_gradients())
        codes = encode(k, [layer for _, layer in chain[:2]], X, batch_size=3)
        results[name] = (losses, [k.to_host(l.W) for _, l in chain],
                         [k.to_host(l.b) for _, l in chain], k.to_host(codes),
                         {n: k.to_host(v) for n, v in opt.velocity.items()})
    (l0, W0, b0, c0, v0), (l1, W1, b1, c1, v1) = results["numpy"], results["cuda"]
    tol = dict(rtol=2e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(l1, l0, **tol)
    for a, b in zip(W1 + b1 + [c1], W0 + b0 + [c0]):
        np.testing.assert_allclose(a, b, **tol)
    assert sorted(v1) == sorted(v0)
    for name in v0:
        np.testing.assert_allclose(v1[name], v0[name], **tol)
    np.testing.assert_array_equal(W1[0], W0[0])  # frozen: untouched on both


@pytest.mark.parametrize("method, lower_lr", [("gradual", None), ("stacked", None),
                                              ("gradual", "linear")])
def test_trainer_runs_whole_schedules_on_the_device(method, lower_lr):
    """The trainer keeps weights and data on the device for each phase and brings them back:
    a short run on the simulated GPU (epochs of recorded steps, lower layers' learning-rate
    multipliers among what device memory holds) equals the numpy backend's, and the network
    ends up in host memory (NumPy arrays) as checkpoints need it."""
    from medalpy.evaluation import reconstruction_metrics
    from medalpy.network import Network
    from medalpy.schedules import build_schedule
    from medalpy.trainer import Hyper, Trainer

    rng = np.random.default_rng(5)
    X = (rng.uniform(size=(20, 8)) * 255).astype(np.uint8)
    results = {}
    for name in ("numpy", "cuda"):
        k = get_backend(name)
        net = Network(8, dtype="float64")
        phases, _ = build_schedule(method, 2, 1, 2, lower_lr=lower_lr)
        trainer = Trainer(k, net, phases, Hyper(lr=0.05, batch_size=6), X[:16], X[16:],
                          [5, 3], seed=1)
        trainer.run()
        metrics = reconstruction_metrics(k, net, X[16:], 0.15)
        assert all(type(a) is np.ndarray for a in net.parameters().values())
        results[name] = (trainer.history, net.parameters(), metrics)
    (h0, p0, m0), (h1, p1, m1) = results["numpy"], results["cuda"]
    assert [r["val_loss"] for r in h0] == pytest.approx([r["val_loss"] for r in h1], rel=1e-9)
    for key in p0:
        np.testing.assert_allclose(p0[key], p1[key], rtol=1e-8, atol=1e-12)
    assert m0["relative_ce"] == pytest.approx(m1["relative_ce"], rel=1e-9)


def test_a_classifier_trains_on_the_device_as_on_numpy():
    """Supervised epochs of recorded steps (labels gathered on the device) equal numpy's, and
    the trained network is scored on the test set on the device."""
    from medalpy.supervised import random_encoders, train_classifier

    rng = np.random.default_rng(6)
    X = (rng.uniform(size=(30, 8)) * 255).astype(np.uint8)
    y = rng.integers(0, 3, 30)
    results = []
    for name in ("numpy", "cuda"):
        encoders = random_encoders(8, [5], seed=2, dtype="float64")
        r = train_classifier(get_backend(name), encoders, X[:20], y[:20], X[20:25], y[20:25],
                             X[25:], y[25:], 3, seed=4, epochs=2, batch_size=6)
        results.append((r["history"], r["network"].parameters(), r["test_error"]))
    (h0, p0, e0), (h1, p1, e1) = results
    assert e1 == e0 and e0 is not None  # the test set scored on the device, too
    assert [r["train_loss"] for r in h1] == pytest.approx([r["train_loss"] for r in h0],
                                                          rel=1e-9)
    for key in p0:
        np.testing.assert_allclose(p1[key], p0[key], rtol=1e-8, atol=1e-12)


def _device_step_run(dtype, normalise, head, mode, epochs=2):
    """Two epochs of a 6-4-3-out chain (lowest layer frozen) on 10 rows in batches of 4, 4
    and 2, lower layers at per-batch learning-rate multipliers: by the host (``Pass.train_step``
    per batch) or by a :class:`DeviceStep` (each batch length recorded once, then replayed)."""
    from medalpy.kernels import cuda_step
    from medalpy.trainer import noise_seed

    rng = np.random.default_rng(9)
    out = 3 if head == "classifier" else 6
    chain = _chain(rng, [6, 4, 3, out], dtype, K)
    chain[0][1].trainable = False
    source = K.to_device(np.random.default_rng(10).integers(0, 256, (10, 6), dtype=np.uint8))
    labels = np.random.default_rng(11).integers(0, 3, 10) if head == "classifier" else None
    p = Pass(K, chain, 4, head, dtype)
    opt = SGD(lr=0.1, momentum=0.9, weight_decay=1e-3, normalise_gradients=normalise)
    X_in, T = K.empty((4, 6), dtype), K.empty((4, 6), dtype)
    seed = noise_seed(1, 3, 0)
    device = cuda_step.DeviceStep(p, source, X_in, T, labels, "gather_masked", 0.25, seed)
    totals = []
    for epoch in range(epochs):
        order = np.random.default_rng([epoch]).permutation(10)
        batches = [order[:4], order[4:8], order[8:]]
        scales = [{"encoder.1": 1.0 - 0.3 * b - 0.1 * epoch} for b in range(3)]
        if mode == "device":
            totals.append(device.epoch(batches, epoch, opt, scales))
            continue
        total = 0.0
        for rows, scale in zip(batches, scales):
            opt.lr_scale = scale
            n = len(rows)
            K.gather_masked(source, rows, 0.25, seed, epoch, X_in[:n])
            if labels is None:
                K.gather(source, rows, T[:n])
                total += p.train_step(X_in[:n], T[:n], opt) * n
            else:
                total += p.train_step(X_in[:n], labels[rows], opt) * n
        totals.append(total)
    params = [K.to_host(a) for _, layer in chain for a in (layer.W, layer.b)]
    velocity = {name: K.to_host(v) for name, v in opt.velocity.items()}
    return totals, params, velocity, device


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("normalise", [False, True])
@pytest.mark.parametrize("head", ["decoder", "classifier"])
def test_a_replayed_device_step_equals_the_host_driven_step(dtype, normalise, head):
    """Epochs run from recorded launches (rows, noise key, learning rates and normGrad's scale
    read from device memory) equal the host-driven steps: bit for bit without normGrad, and
    to round-off with it (its norm is summed from dW rather than from Gram matrices)."""
    l0, p0, v0, _ = _device_step_run(dtype, normalise, head, "host")
    l1, p1, v1, device = _device_step_run(dtype, normalise, head, "device")
    assert sorted(device.runners) == [2, 4]  # one recording per batch length
    assert sorted(v0) == sorted(v1)
    if normalise:
        tol = dict(rtol=1e-5, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-12, atol=0)
        for a, b in zip(p1 + [v1[k] for k in v0], p0 + [v0[k] for k in v0]):
            np.testing.assert_allclose(a, b, **tol)
    else:
        for a, b in zip(p1 + [v1[k] for k in v0], p0 + [v0[k] for k in v0]):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(l1, l0, rtol=1e-6 if dtype == np.float32 else 1e-13)
    np.testing.assert_array_equal(p1[0], p0[0])  # the frozen layer: untouched by both
    assert not np.array_equal(p1[2], _device_step_run(dtype, normalise, head, "host",
                                                      epochs=0)[1][2])  # and others moved


def test_without_capture_the_step_says_why_once_and_replays_its_launches():
    import warnings

    from medalpy.kernels import cuda_step

    cuda_step._said.clear()
    with pytest.warns(RuntimeWarning, match="simulator has no stream capture"):
        _, _, _, device = _device_step_run(np.float64, False, "decoder", "device", epochs=1)
    assert cuda_step.capture_status() == "numba's CUDA simulator has no stream capture"
    assert all(isinstance(r, cuda_step.Tape) for r in device.runners.values())
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "cuda: training steps")  # said once, not per phase
        _device_step_run(np.float64, False, "decoder", "device", epochs=1)


def test_a_tape_replays_with_what_device_memory_holds():
    """A recorded tape launches the same arguments every time; moving the cursor in device
    memory alone makes it train on another batch (what lets a CUDA graph stand for a step)."""
    from medalpy.kernels import cuda_step

    _, _, _, device = _device_step_run(np.float64, False, "decoder", "device", epochs=1)
    tape = device.runners[4]
    order = K.to_host(device.order)
    expected = K.empty((4, 6), np.float64)
    for batch in (1, 0):
        device.cursor.copy_to_device(np.array([batch], np.int64))
        tape.replay()
        K.gather_masked(device.source, order[4 * batch:4 * batch + 4], 0.25, device.noise_seed,
                        0, expected)
        np.testing.assert_array_equal(K.to_host(device.X_in[:4]), K.to_host(expected))
        assert K.to_host(device.cursor)[0] == batch + 1
    assert isinstance(tape, cuda_step.Tape) and len(tape.ops) > 10


def _cohort_cell(backend_name, method, seed, patience=None, normalise=False, epochs=2,
                 lr=0.3):
    """A cell: a short two-layer schedule on its own data (history, weights, phase log)."""
    from medalpy.network import Network
    from medalpy.schedules import build_schedule
    from medalpy.trainer import Hyper, Trainer

    def run():
        rng = np.random.default_rng(seed)
        protos = rng.uniform(size=(3, 8)) > 0.5
        X = ((protos[rng.integers(0, 3, 30)] ^ (rng.uniform(size=(30, 8)) < 0.1)) * 255)
        X = X.astype(np.uint8)
        phases, _ = build_schedule(method, 2, epochs, epochs)
        net = Network(8, dtype="float64")
        hyper = Hyper(lr=lr, batch_size=8, patience=patience, normalise_gradients=normalise)
        trainer = Trainer(get_backend(backend_name), net, phases, hyper, X[:16], X[16:22],
                          [5, 4], seed=seed)
        trainer.run()
        return trainer.history, net.parameters(), trainer.phase_log
    return run


def _run_cohort(cells):
    from medalpy.cluster import Cohorts

    executor = Cohorts()
    futures = [executor.submit(cell) for cell in cells]
    pending = list(futures)
    while pending:
        for done in executor.wait_any(pending):
            pending.remove(done)
    return [f.result() for f in futures], executor.cohort.batched


def _assert_same_runs(a, b, rtol):
    (h0, p0, log0), (h1, p1, log1) = a, b
    assert [r["val_loss"] for r in h1] == pytest.approx([r["val_loss"] for r in h0], rel=rtol)
    assert [r["train_loss"] for r in h1] == pytest.approx([r["train_loss"] for r in h0],
                                                          rel=rtol)
    assert [x["kept_epoch"] for x in log1] == [x["kept_epoch"] for x in log0]
    for key in p0:
        np.testing.assert_allclose(p1[key], p0[key], rtol=rtol, atol=1e-14)


@pytest.mark.parametrize("normalise", [False, True])
def test_a_cohort_of_three_equals_three_single_runs(normalise):
    """Three cells' epochs batched into one step (a leading model axis: strided-batched
    products, kernels over the models) give each cell what it gets alone on numpy: losses,
    weights, kept epochs."""
    specs = [("gradual", 1), ("gradual", 2), ("gradual", 3)]
    alone = [_cohort_cell("numpy", m, s, normalise=normalise)() for m, s in specs]
    together, batched = _run_cohort([_cohort_cell("cuda", m, s, normalise=normalise)
                                     for m, s in specs])
    assert batched and set(batched) == {3}  # every epoch of both phases: one step for three
    for a, b in zip(alone, together):
        _assert_same_runs(a, b, 1e-9)


def test_cohort_members_that_stop_early_keep_their_own_best_parameters():
    """With patience, members stop their phases at different epochs; the others go on
    batched without them, and each keeps its own best parameters and kept epoch."""
    specs = [("gradual", 4, 1, 0.3), ("gradual", 5, None, 0.3), ("stacked", 6, 1, 3.0)]
    alone = [_cohort_cell("numpy", m, s, patience=p, epochs=4, lr=lr)()
             for m, s, p, lr in specs]
    together, batched = _run_cohort([_cohort_cell("cuda", m, s, patience=p, epochs=4, lr=lr)
                                     for m, s, p, lr in specs])
    assert 3 in batched  # phase 1 starts with all three
    assert any(size < 3 for size in batched)  # and goes on with fewer
    kept = [[x["kept_epoch"] for x in run[2]] for run in alone]
    runs = [len(run[0]) for run in alone]
    assert len(set(map(tuple, kept))) > 1 or len(set(runs)) > 1  # they did differ
    for a, b in zip(alone, together):
        _assert_same_runs(a, b, 1e-9)


def test_a_member_alone_then_batched_then_alone_trains_its_current_arrays():
    """A network's own recorded steps are recorded again when a cohort has made its
    parameters views of the cohort's stacks (else they would train arrays nobody reads):
    alone, batched, alone equals the same three epochs all alone."""
    from types import SimpleNamespace

    from medalpy.kernels import cuda_step

    def member(seed):
        rng = np.random.default_rng(seed)
        chain = _chain(rng, [6, 3, 6], np.float64, K)
        source = K.to_device(rng.integers(0, 256, (8, 6), dtype=np.uint8))
        p = Pass(K, chain, 4, "decoder", np.float64)
        X_in, T = K.empty((4, 6), np.float64), K.empty((4, 6), np.float64)
        device = cuda_step.DeviceStep(p, source, X_in, T, None, "gather_masked", 0.2, seed)
        run = SimpleNamespace(backend=K, train_pass=p, source=source, labels=None,
                              noise_kernel="gather_masked", rate=0.2, seed=seed, device=device)
        return run, SGD(lr=0.1, momentum=0.9), chain

    batches = [np.arange(0, 4), np.arange(4, 8)]
    (a, opt_a, chain_a), (b, opt_b, _) = member(1), member(2)
    a.device.epoch(batches, 0, opt_a)
    K.CohortStep([a, b]).epoch([(batches, 1, opt_a, None), (batches, 1, opt_b, None)])
    a.device.epoch(batches, 2, opt_a)
    (c, opt_c, chain_c), _ = member(1), None
    for epoch in range(3):
        c.device.epoch(batches, epoch, opt_c)
    for (_, la), (_, lc) in zip(chain_a, chain_c):
        np.testing.assert_allclose(K.to_host(la.W), K.to_host(lc.W), rtol=1e-12)


def test_a_cohort_of_classifiers_equals_single_runs():
    from medalpy.supervised import random_encoders, train_classifier

    def cell(backend_name, seed):
        def run():
            rng = np.random.default_rng(seed)
            X = (rng.uniform(size=(30, 8)) * 255).astype(np.uint8)
            y = rng.integers(0, 3, 30)
            r = train_classifier(get_backend(backend_name), random_encoders(8, [5], seed=2,
                                                                            dtype="float64"),
                                 X[:20], y[:20], X[20:25], y[20:25], X[25:], y[25:], 3,
                                 seed=seed, epochs=2, batch_size=6)
            return r["history"], r["network"].parameters(), [{"kept_epoch": r["kept_epoch"]}]
        return run

    alone = [cell("numpy", s)() for s in (1, 2)]
    together, batched = _run_cohort([cell("cuda", s) for s in (1, 2)])
    assert batched == [2, 2]
    for a, b in zip(alone, together):
        _assert_same_runs(a, b, 1e-9)


def test_the_cuda_backend_keeps_the_contract():
    import inspect

    from medalpy.kernels import CONTRACT

    for name in CONTRACT:
        assert callable(getattr(K, name, None)), name
        assert inspect.signature(getattr(K, name)) == inspect.signature(getattr(ref, name)), name


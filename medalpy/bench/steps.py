"""What one benchmark step is: the paper's MNIST phases, their work counts, and medalpy's
own training step on synthetic images (the peers it is timed against: :mod:`.peers`)."""

import contextlib

import numpy as np

PHASES = {
    # name: (layer widths from input to output, index of the first trainable layer,
    #        source kind, head)
    "layer1": ([784, 1000, 784], 0, "uint8", "decoder"),
    "stacked": ([1000, 1000, 1000], 0, "codes", "decoder"),
    "gradual": ([784, 1000, 1000, 784], 0, "uint8", "decoder"),
    "supervised": ([784, 1000, 1000, 10], 0, "uint8", "classifier"),
}
BATCH_SIZES = (10, 20, 128)
#: What is timed, in table order: medalpy's cpu backend without normGrad (the peers have
#: none) and with it, its NumPy reference backend, then the peers (:mod:`.peers`).
IMPLEMENTATIONS = ("cpu", "cpu-normgrad", "numpy", "torch", "torch-compile", "jax")
N_SAMPLES = 6000  # synthetic dataset rows: enough that batches come from all over memory


def step_flops(phase, batch_size):
    """GEMM FLOPs of one training step of ``phase`` at ``batch_size``."""
    widths, lowest, _, _ = PHASES[phase]
    total = 0
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
        product = 2 * batch_size * n_in * n_out
        total += product  # forward
        if i >= lowest:
            total += product  # weight gradient
        if i > lowest:
            total += product  # error to the layer below
    return total



def _synthetic(phase, rng):
    """(source, labels): uint8 images or float32 codes in [0, 1], and 10-class labels."""
    widths, _, kind, _ = PHASES[phase]
    if kind == "uint8":
        source = rng.integers(0, 256, size=(N_SAMPLES, widths[0]), dtype=np.uint8)
    else:
        source = rng.random((N_SAMPLES, widths[0]), dtype=np.float32)
    return source, rng.integers(0, 10, size=N_SAMPLES).astype(np.int64)


def _batches(rng, batch_size):
    """An endless cycle of shuffled row batches, as an epoch's permutation gives them."""
    order = rng.permutation(N_SAMPLES)
    starts = range(0, N_SAMPLES - batch_size + 1, batch_size)
    while True:
        for start in starts:
            yield order[start:start + batch_size]


def medalpy_step(backend_name, phase, batch_size, lr=0.1, momentum=0.9, weight_decay=1e-3,
                 normalise_gradients=True, noise=0.15, seed=0, threads=None):
    """A closure running one training step of ``phase`` per call: the trainer's own step
    (:meth:`medalpy.trainer.Trainer.prepare` and ``PhaseRun.step``) on synthetic images.

    ``step.enter()`` sets the threads it runs with (``threads``; default: as found): the
    numpy backend gives them to NumPy's BLAS; the cpu backend runs that many lanes of a
    single-threaded BLAS (:func:`medalpy.kernels.lanes.use_threads`).
    """
    from medalpy.kernels import denormals, get_backend
    from medalpy.network import Network
    from medalpy.schedules import build_schedule, classifier_schedule
    from medalpy.trainer import Hyper, Trainer

    k = get_backend(backend_name)
    widths, _, _, head = PHASES[phase]
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(N_SAMPLES, 784), dtype=np.uint8)
    labels = rng.integers(0, 10, size=N_SAMPLES).astype(np.int64)
    # The phase of a real schedule whose chain has the widths of PHASES[phase].
    phases, p = {"layer1": (build_schedule("gradual", 1, 1, 0)[0], 0),
                 "stacked": (build_schedule("stacked", 2, 1, 1)[0], 1),
                 "gradual": (build_schedule("gradual", 2, 1, 1)[0], 1),
                 "supervised": (classifier_schedule(2, 1), 0)}[phase]
    hyper = Hyper(lr=lr, momentum=momentum, weight_decay=weight_decay,
                  normalise_gradients=normalise_gradients, batch_size=batch_size, noise=noise)
    supervised = head == "classifier"
    trainer = Trainer(k, Network(784, "float32"), phases, hyper, X, X[:100], [1000, 1000],
                      seed, labels=(labels, labels[:100]) if supervised else None,
                      n_classes=10 if supervised else None)
    run = trainer.prepare(p)
    chain = trainer.network.path(phases[p].input_level)
    assert [chain[0][1].n_in] + [layer.n_out for _, layer in chain] == widths
    batches = _batches(rng, batch_size)
    # The cpu backend's session flushes denormals; so does each step here, as in training,
    # without leaving the peers timed beside it in that mode.
    mode = denormals.flushed if backend_name == "cpu" else contextlib.nullcontext

    def step():
        with mode():
            return run.step(next(batches), 0, trainer.optimiser)

    step.layers = [layer for _, layer in chain]  # for tests: the parameters it trains
    if threads is not None:
        if backend_name == "cpu":
            step.enter = lambda: k.use_threads(threads)
        else:
            from medalpy.kernels import blas

            step.enter = lambda: blas.set_threads(threads)
    return step


"""The peers medalpy is timed against, each written as a performance-minded user would write
it: standard PyTorch eager code, the same model under ``torch.compile``, and a JAX step
jitted whole. Each is a closure factory with the signature of
:func:`medalpy.bench.steps.medalpy_step` (less the backend), listed in :data:`PEERS`.

Every peer trains the same network on the same data as medalpy's step: the layer widths of
``PHASES[phase]``, sigmoid units (the classifier's last layer is linear, under a softmax),
the synthetic rows of :func:`~medalpy.bench.steps._synthetic` in the order of
:func:`~medalpy.bench.steps._batches`, masking noise that zeroes each input with
probability ``noise``, and SGD as ``torch.optim.SGD`` runs it: ``v = momentum v + (g + wd
p)``, ``p -= lr v``. The loss is the binary cross-entropy of the sigmoid output against the
clean input, summed over units and averaged over the batch (decoders), or the softmax
cross-entropy averaged over the batch (``supervised``).

Each closure returns the step's loss as a float, which waits for the step to finish, and has
``step.weights()``: copies of the current parameters as ``[(W, b)]``, ``W`` of shape
``(n_in, n_out)``. The factories take ``init``, parameters in that form to start from
(default: each library's own initialisation), so tests can compare a step's maths with
NumPy's.
"""

import numpy as np

from medalpy.bench.steps import PHASES, _batches, _synthetic


def _data(phase, batch_size, seed):
    """(data, labels, batches): the ``(N_SAMPLES, widths[0])`` float32 rows in [0, 1]
    (uint8 images scaled by 1/255, or the codes as they are), their int64 labels and the
    endless iterator of row-index batches, drawn from ``seed`` as every peer draws them."""
    _, _, kind, _ = PHASES[phase]
    rng = np.random.default_rng(seed)
    source, labels = _synthetic(phase, rng)
    data = source.astype(np.float32) / 255.0 if kind == "uint8" else source
    return data, labels, _batches(rng, batch_size)


def _torch_training(phase, lr, momentum, weight_decay, seed, init, foreach=None):
    """(model, criterion, optimiser): the ``nn.Sequential`` of ``nn.Linear`` and
    ``nn.Sigmoid`` for ``phase``, its loss and ``torch.optim.SGD`` over its parameters."""
    import torch
    from torch import nn

    widths, _, _, head = PHASES[phase]
    torch.manual_seed(seed)
    modules = []
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
        modules.append(nn.Linear(n_in, n_out))
        if i < len(widths) - 2 or head != "classifier":
            modules.append(nn.Sigmoid())
    model = nn.Sequential(*modules)
    if init is not None:
        with torch.no_grad():
            for linear, (W, b) in zip(_linears(model), init):
                linear.weight.copy_(torch.from_numpy(np.asarray(W, np.float32).T))
                linear.bias.copy_(torch.from_numpy(np.asarray(b, np.float32)))
    if head == "classifier":
        criterion = nn.CrossEntropyLoss()
    else:
        bce = nn.BCELoss(reduction="sum")
        criterion = lambda y, t: bce(y, t) / t.shape[0]  # noqa: E731  (sum units, mean batch)
    optimiser = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                                weight_decay=weight_decay, foreach=foreach)
    return model, criterion, optimiser


def _linears(model):
    """The ``nn.Linear`` layers of ``model``, input first."""
    return [module for module in model if hasattr(module, "weight")]


def _torch_weights(model):
    """Copies of ``model``'s parameters as ``[(W, b)]``, ``W`` of shape ``(n_in, n_out)``."""
    return [(linear.weight.detach().numpy().T.copy(), linear.bias.detach().numpy().copy())
            for linear in _linears(model)]


def _torch_threads(step, threads):
    """Give ``step`` an ``enter`` setting torch's threads to ``threads`` (if given)."""
    if threads is not None:
        import torch

        step.enter = lambda: torch.set_num_threads(threads)


def torch_step(phase, batch_size, lr=0.1, momentum=0.9, weight_decay=1e-3, noise=0.15,
               seed=0, threads=None, init=None):
    """A closure running one training step written the standard PyTorch way (eager).

    With ``threads``, ``step.enter()`` sets torch's threads to that many.
    """
    return _torch_peer(phase, batch_size, lr, momentum, weight_decay, noise, seed, threads,
                       init, compiled=False)


def torch_compiled_step(phase, batch_size, lr=0.1, momentum=0.9, weight_decay=1e-3,
                        noise=0.15, seed=0, threads=None, init=None):
    """A closure running :func:`torch_step`'s training step under ``torch.compile``.

    The batch gather, masking, forward and loss are one ``torch.compile`` graph (inductor,
    default mode); AOTAutograd compiles their backward with it, and ``loss.backward()``
    runs that compiled backward. The update is ``torch.optim.SGD(..., foreach=True)``,
    outside the compiled graph. The first call compiles (seconds).

    Inductor's C++ kernels fix their thread count when they are compiled, so with
    ``threads`` the graph is compiled for that many (``cpp.threads``); ``step.enter()`` sets
    torch's threads, which its matrix products use, to the same.
    """
    return _torch_peer(phase, batch_size, lr, momentum, weight_decay, noise, seed, threads,
                       init, compiled=True)


def _torch_peer(phase, batch_size, lr, momentum, weight_decay, noise, seed, threads, init,
                compiled):
    """The step of :func:`torch_step` (eager) or :func:`torch_compiled_step`."""
    import torch

    head = PHASES[phase][3]
    data, labels, batches = _data(phase, batch_size, seed)
    model, criterion, optimiser = _torch_training(phase, lr, momentum, weight_decay, seed, init,
                                                  foreach=True if compiled else None)
    data, targets = torch.from_numpy(data), torch.from_numpy(labels)

    def loss_of(rows):
        x = data[rows]
        x_noisy = x * (torch.rand_like(x) > noise)
        return criterion(model(x_noisy), targets[rows] if head == "classifier" else x)

    if compiled:
        loss_of = torch.compile(loss_of, options=None if threads is None
                                else {"cpp.threads": int(threads)})

    def step():
        optimiser.zero_grad()
        loss = loss_of(torch.from_numpy(next(batches)))
        loss.backward()
        optimiser.step()
        return loss.item()

    step.weights = lambda: _torch_weights(model)
    _torch_threads(step, threads)
    return step


def jax_step(phase, batch_size, lr=0.1, momentum=0.9, weight_decay=1e-3, noise=0.15, seed=0,
             threads=None, init=None):
    """A closure running one training step as one ``jax.jit`` computation.

    The jitted function takes the parameters, their velocities, the random key, the data
    (put on the device once) and the batch's row indices; it gathers the batch, draws the
    mask from a key split off per step, takes the loss and its gradients
    (``jax.value_and_grad``) and returns the updated parameters, velocities and key. Those
    three are donated, so XLA updates them in place. The decoders' loss is computed from the
    output layer's logits ``z`` as ``softplus(z) - x z``: the binary cross-entropy of
    ``sigmoid(z)`` against ``x``, without its logarithms. Default parameters: as
    ``nn.Linear``'s, ``W`` and ``b`` uniform in ``+-1/sqrt(n_in)``.

    ``threads`` is accepted for the common signature but cannot be honoured: XLA sizes its
    CPU thread pool once, when its backend starts (from the process's CPU affinity and
    ``XLA_FLAGS``), so the step has no ``enter``. To run JAX on fewer cores, start Python
    under ``taskset``.
    """
    from functools import partial

    import jax
    import jax.numpy as jnp

    widths, _, _, head = PHASES[phase]
    classifier = head == "classifier"
    data, labels, batches = _data(phase, batch_size, seed)
    data = jax.device_put(data)
    labels = jax.device_put(labels.astype(np.int32))  # JAX's default integers are 32-bit
    key = jax.random.key(seed)
    if init is None:
        key, *layer_keys = jax.random.split(key, len(widths))
        init = [_jax_uniform_layer(k, n_in, n_out)
                for k, n_in, n_out in zip(layer_keys, widths, widths[1:])]
    # Copies (jnp.array copies), as the donated buffers are overwritten by each step.
    params = [(jnp.array(W, jnp.float32), jnp.array(b, jnp.float32)) for W, b in init]
    velocities = jax.tree.map(jnp.zeros_like, params)

    def loss_of(params, x_in, target):
        h = x_in
        for W, b in params[:-1]:
            h = jax.nn.sigmoid(h @ W + b)
        W, b = params[-1]
        z = h @ W + b  # the output layer's logits
        if classifier:
            log_p = jax.nn.log_softmax(z)
            return -jnp.mean(jnp.take_along_axis(log_p, target[:, None], axis=1))
        return jnp.sum(jax.nn.softplus(z) - target * z) / z.shape[0]

    @partial(jax.jit, donate_argnums=(0, 1, 2))
    def train(params, velocities, key, data, labels, rows):
        key, mask_key = jax.random.split(key)
        x = data[rows]
        x_noisy = x * jax.random.bernoulli(mask_key, 1.0 - noise, x.shape)
        loss, grads = jax.value_and_grad(loss_of)(params, x_noisy,
                                                  labels[rows] if classifier else x)
        velocities = jax.tree.map(lambda v, g, p: momentum * v + (g + weight_decay * p),
                                  velocities, grads, params)
        params = jax.tree.map(lambda p, v: p - lr * v, params, velocities)
        return params, velocities, key, loss

    def step():
        nonlocal params, velocities, key
        params, velocities, key, loss = train(params, velocities, key, data, labels,
                                              next(batches))
        return float(loss)  # waits for the step, so a timing covers all of it

    step.weights = lambda: [(np.array(W), np.array(b)) for W, b in params]
    return step


def _jax_uniform_layer(key, n_in, n_out):
    """(W, b) of shapes (n_in, n_out) and (n_out,), uniform in +-1/sqrt(n_in)."""
    import jax

    bound = 1.0 / np.sqrt(n_in)
    w_key, b_key = jax.random.split(key)
    return (jax.random.uniform(w_key, (n_in, n_out), minval=-bound, maxval=bound),
            jax.random.uniform(b_key, (n_out,), minval=-bound, maxval=bound))


def _have_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _have_jax():
    try:
        import jax  # noqa: F401
    except ImportError:
        return False
    return True


#: The peers by the name the benchmark reports them under: {name: step factory}.
PEERS = {"torch": torch_step, "torch-compile": torch_compiled_step, "jax": jax_step}


def available_peers():
    """{name: step factory} of the :data:`PEERS` whose library is installed."""
    have = {"torch": _have_torch(), "jax": _have_jax()}
    # A peer's name starts with its library's.
    return {name: factory for name, factory in PEERS.items() if have[name.split("-")[0]]}

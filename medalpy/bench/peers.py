"""The peers medalpy is timed against, each written as a performance-minded user would write
it: standard PyTorch eager code (more peers are added here, each a closure factory with the
signature of :func:`medalpy.bench.steps.medalpy_step`)."""

import numpy as np

from medalpy.bench.steps import PHASES, _batches, _synthetic


def torch_step(phase, batch_size, lr=0.1, momentum=0.9, weight_decay=1e-3, noise=0.15,
               seed=0):
    """A closure running one training step written the standard PyTorch way."""
    import torch
    from torch import nn

    widths, _, kind, head = PHASES[phase]
    rng = np.random.default_rng(seed)
    source, labels = _synthetic(phase, rng)
    torch.manual_seed(seed)
    data = torch.from_numpy(source.astype(np.float32) / 255.0 if kind == "uint8" else source)
    targets = torch.from_numpy(labels)
    modules = []
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
        modules.append(nn.Linear(n_in, n_out))
        if i < len(widths) - 2 or head != "classifier":
            modules.append(nn.Sigmoid())
    model = nn.Sequential(*modules)
    if head == "classifier":
        criterion = nn.CrossEntropyLoss()
    else:
        bce = nn.BCELoss(reduction="sum")
        criterion = lambda y, t: bce(y, t) / t.shape[0]  # noqa: E731  (sum units, mean batch)
    optimiser = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                                weight_decay=weight_decay)
    batches = _batches(rng, batch_size)

    def step():
        rows = torch.from_numpy(next(batches))
        x = data[rows]
        x_noisy = x * (torch.rand_like(x) > noise)
        optimiser.zero_grad()
        loss = criterion(model(x_noisy), targets[rows] if head == "classifier" else x)
        loss.backward()
        optimiser.step()
        return loss.item()

    return step


def _have_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


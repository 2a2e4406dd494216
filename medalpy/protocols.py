"""The paper's per-dataset protocols, as data (Kalmanovich & Chechik 2015, sec. 4).

A protocol holds what the paper fixed for a family of datasets: the masking-noise rate, the
network, the epochs of layer 1, the budget of the deeper layers, the epochs of full tuning,
and the k of its k-fold cross-validation. Every dataset of :mod:`medalpy.data.registry`
names its protocol, so nothing dataset-specific is decided by testing a dataset's name.

=========  =====  ============  =======  ======  ===========  =====
protocol   noise  layers        layer 1  budget  full tuning  folds
=========  =====  ============  =======  ======  ===========  =====
mnist      0.15   1000, 1000    50       80      80           10
cifar10    0.10   1500, 1500    25       70      70           5
cifar100   0.10   2500, 2500    35       70      70           5
=========  =====  ============  =======  ======  ===========  =====
"""

from dataclasses import dataclass

from medalpy.errors import ConfigError


@dataclass(frozen=True)
class Protocol:
    name: str
    noise: float
    layers: tuple
    epochs_layer1: int
    budget: int
    finetune_epochs: int
    folds: int
    #: The preset of medalpy.run.PRESETS with the settings searched for this protocol (what
    #: ``--scale paper`` uses), or None while there is none.
    preset: str = None

    def scale(self):
        """The sizes and epochs of the ``paper`` scale (what ``--scale paper`` sets)."""
        return {"layers": list(self.layers), "epochs_layer1": self.epochs_layer1,
                "budget": self.budget, "finetune_epochs": self.finetune_epochs}


PROTOCOLS = {
    "mnist": Protocol("mnist", 0.15, (1000, 1000), 50, 80, 80, 10, preset="paper-mnist"),
    "cifar10": Protocol("cifar10", 0.10, (1500, 1500), 25, 70, 70, 5),
    "cifar100": Protocol("cifar100", 0.10, (2500, 2500), 35, 70, 70, 5),
}


def protocol_for(dataset):
    """The protocol of a dataset of the registry (a ConfigError naming it otherwise)."""
    from medalpy.data.registry import DATASETS

    if not isinstance(dataset, str) or dataset not in DATASETS:
        known = ", ".join(sorted(DATASETS))
        raise ConfigError(f"unknown dataset {dataset!r}; known: {known}")
    return PROTOCOLS[DATASETS[dataset].protocol]

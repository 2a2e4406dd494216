"""The paper's per-dataset protocols reach `train`, `experiment` and `search` as data."""

import pytest

from medalpy.data.registry import DATASETS
from medalpy.errors import ConfigError
from medalpy.experiments.definitions import base_params
from medalpy.protocols import PROTOCOLS, protocol_for
from medalpy.run import make_config
from medalpy.search import SearchSpec


@pytest.mark.parametrize("dataset, noise, layers, e1, budget, tune, folds", [
    ("mnist", 0.15, [1000, 1000], 50, 80, 80, 10),
    ("fashion-mnist", 0.15, [1000, 1000], 50, 80, 80, 10),
    ("cifar10", 0.10, [1500, 1500], 25, 70, 70, 5),
    ("cifar100", 0.10, [2500, 2500], 35, 70, 70, 5),
])
def test_each_dataset_gets_its_protocol(dataset, noise, layers, e1, budget, tune, folds):
    cfg = make_config({"dataset": dataset, "scale": "paper"})
    assert (cfg.noise, cfg.layers, cfg.epochs_layer1, cfg.budget, cfg.finetune_epochs) == (
        noise, layers, e1, budget, tune)
    assert make_config({"dataset": dataset}).noise == noise  # every scale takes the noise
    params = base_params(dataset, "paper")
    assert (params["noise"], params["layers"], params["epochs_layer1"], params["budget"],
            params["finetune_epochs"]) == (noise, layers, e1, budget, tune)
    assert base_params(dataset, "quick")["noise"] == noise
    spec = SearchSpec(dataset=dataset, space={"units": [16]})
    assert (spec.noise, spec.folds) == (noise, folds)


def test_explicit_settings_override_the_protocol():
    cfg = make_config({"dataset": "cifar10", "scale": "paper", "noise": 0.25,
                       "layers": "40,30"})
    assert cfg.noise == 0.25 and cfg.layers == [40, 30] and cfg.budget == 70
    assert base_params("cifar100", "quick", noise=0.2)["noise"] == 0.2


def test_every_dataset_names_a_protocol_and_unknown_ones_are_refused():
    assert {spec.protocol for spec in DATASETS.values()} <= set(PROTOCOLS)
    with pytest.raises(ConfigError, match="unknown dataset 'svhn'"):
        protocol_for("svhn")
    with pytest.raises(ConfigError, match="unknown dataset"):
        make_config({"dataset": "svhn"})


def test_every_noise_kind_has_a_kernel_on_every_backend():
    """The registry is the one list: each kind's kernel exists in reference, cpu and cuda
    (the cuda module is read as text: importing it needs numba.cuda)."""
    from pathlib import Path

    from medalpy.corruption import NOISE_TYPES
    from medalpy.kernels import cpu
    from medalpy.kernels import reference as ref

    cuda_source = (Path(ref.__file__).parent / "cuda.py").read_text()
    for kind in NOISE_TYPES.values():
        assert callable(getattr(ref, kind.kernel)) and callable(getattr(cpu, kind.kernel))
        assert f"def {kind.kernel}(X, rows, " in cuda_source, kind.name


def test_the_paper_scale_takes_the_protocols_searched_preset(monkeypatch):
    """A protocol that names a preset gives it to --scale paper runs and experiments (unless
    another is asked for); other scales keep MEDAL's."""
    import dataclasses

    from medalpy import protocols, run

    searched = {**run.PRESETS["medal"], "lr": 0.01, "momentum": 0.7}
    monkeypatch.setitem(run.PRESETS, "searched", searched)
    monkeypatch.setitem(protocols.PROTOCOLS, "mnist",
                        dataclasses.replace(PROTOCOLS["mnist"], preset="searched"))
    cfg = make_config({"dataset": "mnist", "scale": "paper"})
    assert (cfg.preset, cfg.lr, cfg.momentum) == ("searched", 0.01, 0.7)
    assert make_config({"dataset": "mnist"}).preset == "medal"
    chosen = make_config({"dataset": "mnist", "scale": "paper", "preset": "medal"})
    assert (chosen.preset, chosen.lr) == ("medal", 0.1)
    assert base_params("mnist", "paper")["lr"] == 0.01
    assert base_params("mnist", "paper")["preset"] == "searched"
    assert base_params("mnist", "medium")["preset"] == "medal"


def test_mnist_at_the_paper_scale_takes_the_searched_preset():
    """The search's winner (docs/search.md) is MNIST's paper preset; CIFAR has none yet."""
    from medalpy import run

    cfg = make_config({"dataset": "mnist", "scale": "paper"})
    assert cfg.preset == "paper-mnist"
    assert (cfg.lr, cfg.batch_size, cfg.momentum, cfg.weight_decay,
            cfg.normalise_gradients) == (0.01, 10, 0.9, 1e-5, False)
    assert run.PRESETS["paper-mnist"]["init"] == run.PRESETS["medal"]["init"]
    assert make_config({"dataset": "cifar10", "scale": "paper"}).preset == "medal"

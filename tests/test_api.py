"""The package face: every public name resolves, and README's Python example runs."""

import re
from pathlib import Path

import numpy as np

import medalpy


def test_every_public_name_resolves_to_what_it_says():
    from medalpy import checkpoint, data, run, trainer

    for name in medalpy.__all__:
        assert getattr(medalpy, name) is not None, name
    assert medalpy.load_model is checkpoint.load and medalpy.load_dataset is data.load
    assert medalpy.build_trainer is run.build_trainer and medalpy.Trainer is trainer.Trainer
    assert "Trainer" in dir(medalpy)


def test_readme_examples_run_as_doctests(tmp_path, monkeypatch):
    """README's ``pycon`` blocks, then docs/python.md's (the scikit-learn example, which
    continues README's), run in order in one namespace, output checked."""
    import doctest

    root = Path(__file__).resolve().parent.parent
    readme, sklearn = ((root / name).read_text() for name in ("README.md", "docs/python.md"))
    blocks = re.findall(r"```pycon\n(.*?)```", readme, flags=re.S)
    more = re.findall(r"```pycon\n(.*?)```", sklearn, flags=re.S)
    assert len(blocks) >= 1 and len(more) >= 1, "the Python examples are gone"
    blocks += more
    monkeypatch.chdir(tmp_path)
    test = doctest.DocTestParser().get_doctest("\n".join(blocks), {}, "README.md",
                                                "README.md", 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    result = runner.run(test)
    assert result.attempted >= 15 and result.failed == 0
    assert (tmp_path / "runs" / "api-gradual" / "model.h5").is_file()


def test_build_trainer_is_what_medalpy_train_runs(tmp_path):
    """The library function and the command give the same weights."""
    from click.testing import CliRunner

    from medalpy.cli import main

    args = {"dataset": "mnist-sample", "layers": [30, 20], "epochs_layer1": 2, "budget": 1,
            "train_size": 500, "val_size": 100, "seed": 3}
    result = CliRunner().invoke(main, [
        "train", "mnist-sample", "--layers", "30,20", "--epochs-layer1", "2", "--budget", "1",
        "--train-size", "500", "--val-size", "100", "--seed", "3", "--quiet",
        "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    cfg = medalpy.make_config(args)
    from medalpy.run import prepare_data

    ds, train_rows, val_rows, _ = prepare_data(cfg)
    trainer = medalpy.build_trainer(cfg, ds.train_images[train_rows], ds.train_images[val_rows])
    trainer.run()
    saved = medalpy.load_model(tmp_path / "cli" / "model.h5")["network"].parameters()
    for name, array in trainer.network.parameters().items():
        np.testing.assert_array_equal(array, saved[name], err_msg=name)

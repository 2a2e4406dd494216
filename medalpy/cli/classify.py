"""``medalpy classify MODEL DATASET``: a classifier initialised from pretrained encoders."""

import click

from medalpy import settings
from medalpy.cli._common import (
    data_dir_option,
    overwrite_option,
    reports_errors,
    setting_options,
)
from medalpy.config import BACKENDS


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("dataset", required=False)
@click.option("--train-size", type=int, help="Class-balanced training subset (default: all).")
@click.option("--val-size", type=int,
              help="Validation images (default: a fifth of the training subset, >= 100).")
@setting_options(settings.CLASSIFIER)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--random-init", is_flag=True,
              help="Ignore MODEL's weights: the same architecture, randomly initialised.")
@click.option("--backend", type=click.Choice(list(BACKENDS)), default="cpu")
@data_dir_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True)
@overwrite_option
@reports_errors
def classify(model, dataset, train_size, val_size, epochs, patience, lr, momentum,
             weight_decay, batch_size, normalise_gradients, seed, random_init, backend,
             data_dir, out_dir, overwrite):
    """Fine-tune MODEL's encoders plus a new softmax layer on DATASET; report test error.

    Settings not given take their defaults, or the settings searched for MODEL's preset
    when it has them (a model trained with --preset paper-mnist)."""
    from medalpy import checkpoint, outputs
    from medalpy.data import load
    from medalpy.errors import ConfigError
    from medalpy.kernels import get_backend
    from medalpy.supervised import (
        CLASSIFIER_DEFAULTS,
        check_classifier_settings,
        classification_data,
        classifier_defaults,
        random_encoders,
        train_classifier,
    )

    given = {"epochs": epochs, "patience": patience, "lr": lr, "momentum": momentum,
             "weight_decay": weight_decay, "batch_size": batch_size,
             "normalise_gradients": normalise_gradients}
    given = {k: v for k, v in given.items() if v is not None}
    check_classifier_settings({**CLASSIFIER_DEFAULTS, **given}, option_prefix="")
    for name, value in (("--train-size", train_size), ("--val-size", val_size)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    outputs.check(out_dir, "classify", overwrite=overwrite)  # before any work
    saved = checkpoint.load(model)
    clf = {**classifier_defaults(saved["config"].get("preset")), **given}
    dataset = dataset or saved["config"].get("dataset", "mnist")
    ds = load(dataset, data_dir, grayscale=saved["config"].get("grayscale", False))
    encoders = saved["network"]
    if encoders.n_inputs != ds.n_features:
        raise ConfigError(f"{model} takes {encoders.n_inputs} inputs, {dataset} has "
                          f"{ds.n_features}")
    if random_init:
        encoders = random_encoders(ds.n_features, [l.n_out for l in encoders.encoders], seed,
                                   encoders.dtype)
    train_rows, val_rows = classification_data(ds, train_size, val_size, seed)
    with outputs.claim(out_dir, "classify", overwrite=overwrite) as out:
        result = train_classifier(
            get_backend(backend), encoders, ds.train_images[train_rows],
            ds.train_labels[train_rows], ds.train_images[val_rows], ds.train_labels[val_rows],
            ds.test_images, ds.test_labels, ds.n_classes, seed, **clf)
        _write(out, model, random_init, dataset, ds, train_rows, val_rows, result, clf, seed)
    click.echo(f"{dataset} ({ds.source['kind']}): {len(train_rows)} training images, "
               f"{result['epochs_run']} epochs; validation error {result['val_error']:.4f}, "
               f"test error {result['test_error']:.4f}; outputs in {out}/")


def _write(out, model, random_init, dataset, ds, train_rows, val_rows, result, clf, seed):
    """classifier.h5 and metrics.json."""
    from medalpy import checkpoint
    from medalpy.atomic import write_json_atomic

    record = {"model": str(model), "random_init": random_init, "dataset": dataset,
              "data": ds.source, "n_train": int(len(train_rows)), "n_val": int(len(val_rows)),
              "test_error": result["test_error"], "val_error": result["val_error"],
              "kept_epoch": result["kept_epoch"], "epochs_run": result["epochs_run"],
              "history": result["history"],
              "settings": {**clf, "seed": seed}}
    checkpoint.save(out / "classifier.h5", result["network"], record["settings"],
                    extra={k: v for k, v in record.items() if k != "history"})
    write_json_atomic(out / "metrics.json", record)

"""``medalpy evaluate MODEL DATASET``: recompute a saved model's test metrics."""

import json

import click

from medalpy.cli._common import data_dir_option, reports_errors
from medalpy.config import BACKENDS


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("dataset", required=False)
@data_dir_option
@click.option("--noise", type=float,
              help="Noise level of the corrupted test set (default: the model's own; its kind "
                   "is the model's too).")
@click.option("--backend", type=click.Choice(list(BACKENDS)), default="cpu")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@reports_errors
def evaluate(model, dataset, data_dir, noise, backend, as_json):
    """Test relative cross-entropy of MODEL on DATASET (default: the one it was trained on)."""
    from medalpy import checkpoint
    from medalpy.data import load
    from medalpy.evaluation import reconstruction_metrics
    from medalpy.kernels import get_backend

    saved = checkpoint.load(model)
    config = saved["config"]
    dataset = dataset or config.get("dataset", "mnist")
    from medalpy.corruption import check_level

    noise = config.get("noise", 0.15) if noise is None else noise
    ds = load(dataset, data_dir, grayscale=config.get("grayscale", False))
    noise_type = config.get("noise_type", "masking")
    check_level(noise_type, noise, "--noise")
    metrics = reconstruction_metrics(get_backend(backend), saved["network"], ds.test_images,
                                     noise, noise_type=noise_type)
    result = {"model": model, "dataset": dataset, "data_kind": ds.source["kind"],
              "noise": noise, "noise_type": noise_type,
              "test_relative_ce": metrics["relative_ce"],
              "test_relative_ce_clean": metrics["relative_ce_clean"]}
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(f"{dataset} ({ds.source['kind']}), {noise_type} noise {noise}: test "
                   f"relative cross-entropy {metrics['relative_ce']:.3f} (corrupted input), "
                   f"{metrics['relative_ce_clean']:.3f} (clean input)")

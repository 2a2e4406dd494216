"""``medalpy evaluate MODEL DATASET``: recompute a saved model's test metrics."""

import json

import click

from medalpy.cli._common import data_dir_option, reports_errors
from medalpy.config import BACKENDS


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("dataset", required=False)
@data_dir_option
@click.option("--noise", type=click.FloatRange(0, 1, max_open=True),
              help="Masking-noise rate (default: the model's).")
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
    noise = config.get("noise", 0.15) if noise is None else noise
    ds = load(dataset, data_dir, grayscale=config.get("grayscale", False))
    metrics = reconstruction_metrics(get_backend(backend), saved["network"], ds.test_images,
                                     noise)
    result = {"model": model, "dataset": dataset, "data_kind": ds.source["kind"],
              "noise": noise, "test_relative_ce": metrics["relative_ce"],
              "test_relative_ce_clean": metrics["relative_ce_clean"]}
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(f"{dataset} ({ds.source['kind']}), noise {noise}: test relative "
                   f"cross-entropy {metrics['relative_ce']:.3f} (corrupted input), "
                   f"{metrics['relative_ce_clean']:.3f} (clean input)")

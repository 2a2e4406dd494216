"""``medalpy train DATASET``: pretrain a deep DAE with one schedule and record the result."""

import click

from medalpy import settings
from medalpy.cli._common import (
    UserError,
    data_dir_option,
    overwrite_option,
    reports_errors,
    setting_options,
)


@click.command()
@click.argument("dataset", required=False)
@click.option("--gradual", is_flag=True,
              help="Gradual: lower layers keep training, noise at the input (default).")
@click.option("--stacked", is_flag=True,
              help="Stacked: lower layers frozen, noise at the layer being trained.")
@click.option("--frozen-lower", is_flag=True,
              help="Ablation: noise at the input, lower layers frozen.")
@click.option("--hybrid", "fraction", type=float, metavar="F",
              help="Hybrid: stacked for a fraction F of each phase's budget, then gradual.")
@setting_options(settings.TRAIN)
@data_dir_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output directory (default: runs/DATASET-METHOD).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@overwrite_option
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML file with the same setting names (underscores).")
@click.option("--quiet", is_flag=True, help="No per-epoch progress lines.")
@reports_errors
def train(dataset, gradual, stacked, frozen_lower, fraction, out_dir, resume, overwrite,
          config_file, quiet, **options):
    """Pretrain a deep denoising autoencoder on DATASET (default: mnist).

    Writes OUT/model.h5, OUT/metrics.json, OUT/log.jsonl and a resumable OUT/checkpoint.h5.
    """
    from medalpy import run
    from medalpy.callbacks import ProgressPrinter

    chosen = [flag for flag, on in (("--gradual", gradual), ("--stacked", stacked),
                                     ("--frozen-lower", frozen_lower),
                                     ("--hybrid", fraction is not None)) if on]
    if len(chosen) > 1:
        raise UserError(f"{' and '.join(chosen)}: choose one schedule")
    method = {"--gradual": "gradual", "--stacked": "stacked", "--frozen-lower": "frozen_lower",
              "--hybrid": "hybrid"}[chosen[0]] if chosen else None
    options.update(dataset=dataset, method=method, fraction=fraction)
    cfg = run.make_config(options, config_file)
    out_dir = out_dir or f"runs/{cfg.dataset}-{cfg.method}"
    echo = lambda message: click.echo(message, err=True)  # noqa: E731
    metrics = run.train(cfg, out_dir, resume=resume, overwrite=overwrite, echo=echo,
                        callbacks=[] if quiet else [ProgressPrinter()])
    click.echo(f"data: {metrics['data']['dataset']} ({metrics['data']['kind']}), "
               f"{metrics['data']['n_train']} training images")
    click.echo(f"budget units spent: {metrics['budget_units_spent']} "
               f"(schedule: {metrics['budget_units']}); eval decoder: {metrics['eval_decoder']}")
    click.echo(f"test relative cross-entropy, corrupted input: {metrics['test_relative_ce']:.3f}")
    click.echo(f"test relative cross-entropy, clean input:     "
               f"{metrics['test_relative_ce_clean']:.3f}")
    click.echo(f"predicting the mean training image:           "
               f"{metrics['mean_image_relative_ce']:.3f}")
    click.echo(f"wall time {metrics['wall_seconds']:.1f} s; outputs in {out_dir}/ "
               "(model.h5, metrics.json, log.jsonl)")

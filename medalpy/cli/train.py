"""``medalpy train DATASET``: pretrain a deep DAE with one schedule and record the result."""

import click

from medalpy.cli._common import UserError, data_dir_option, reports_errors
from medalpy.config import BACKENDS


@click.command()
@click.argument("dataset", required=False)
@click.option("--gradual", "method", flag_value="gradual",
              help="Gradual: lower layers keep training, noise at the input (default).")
@click.option("--stacked", "method", flag_value="stacked",
              help="Stacked: lower layers frozen, noise at the layer being trained.")
@click.option("--frozen-lower", "method", flag_value="frozen_lower",
              help="Ablation: noise at the input, lower layers frozen.")
@click.option("--hybrid", "fraction", type=float, metavar="F",
              help="Hybrid: stacked for a fraction F of each phase's budget, then gradual.")
@click.option("--ablation-budget", type=click.Choice(["updates", "epochs"]),
              help="--frozen-lower's equal budget: gradual's weight updates (k*budget epochs, "
                   "default) or gradual's epochs (budget epochs).")
@click.option("--layers", help="Units per hidden layer, e.g. 1000,1000.")
@click.option("--noise", type=float,
              help="Masking-noise rate (default: the dataset's protocol, 0.15 for MNIST).")
@click.option("--noise-type", type=click.Choice(["masking", "salt-pepper", "gaussian"]),
              help="Kind of corruption (default masking, the paper's); --noise is its level: "
                   "a probability, or the Gaussian's standard deviation.")
@click.option("--epochs-layer1", type=int, help="Epochs of phase 1.")
@click.option("--budget", type=int,
              help="Gradual epochs per deeper phase; phase k costs k*budget units.")
@click.option("--finetune-epochs", type=int, help="Epochs of full tuning after pretraining.")
@click.option("--eval-decoder", type=click.Choice(["auto", "direct", "mirror"]),
              help="Decoder topology for evaluation (auto: the schedule's own).")
@click.option("--lr", type=float, help="Learning rate.")
@click.option("--batch-size", type=int, help="Minibatch size.")
@click.option("--momentum", type=float, help="Momentum.")
@click.option("--weight-decay", type=float, help="L2 weight decay on weights (not biases).")
@click.option("--normalise-gradients/--no-normalise-gradients", default=None,
              help="MEDAL's normGrad: scale each layer's gradient to unit norm.")
@click.option("--patience", type=int,
              help="Stop a phase after this many epochs without validation improvement "
                   "(off by default: budgets are spent in full).")
@click.option("--train-size", type=int, help="Class-balanced training subset size.")
@click.option("--val-size", type=int, help="Validation images (default: a sixth of training).")
@click.option("--seed", type=int, help="Root random seed.")
@click.option("--scale", type=click.Choice(["quick", "medium", "paper"]),
              help="quick: seconds on the bundled sample; medium: the paper's network, a fifth "
                   "of its epochs; paper: the dataset's protocol (network, epochs, full "
                   "tuning).")
@click.option("--preset", help="Optimiser settings: medal (MEDAL's defaults).")
@click.option("--backend", type=click.Choice(list(BACKENDS)), help="Kernel backend.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]))
@data_dir_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output directory (default: runs/DATASET-METHOD).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML file with the same setting names (underscores).")
@click.option("--quiet", is_flag=True, help="No per-epoch progress lines.")
@reports_errors
def train(dataset, method, fraction, out_dir, resume, config_file, quiet, **options):
    """Pretrain a deep denoising autoencoder on DATASET (default: mnist).

    Writes OUT/model.h5, OUT/metrics.json, OUT/log.jsonl and a resumable OUT/checkpoint.h5.
    """
    from medalpy import run
    from medalpy.callbacks import ProgressPrinter

    if fraction is not None:
        if method is not None:
            raise UserError(f"--hybrid cannot be combined with --{method.replace('_', '-')}")
        method = "hybrid"
    options.update(dataset=dataset, method=method, fraction=fraction)
    cfg = run.make_config(options, config_file)
    out_dir = out_dir or f"runs/{cfg.dataset}-{cfg.method}"
    echo = lambda message: click.echo(message, err=True)  # noqa: E731
    metrics = run.train(cfg, out_dir, resume=resume, echo=echo,
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

"""``medalpy search DATASET``: cross-validated hyper-parameter search on worker processes or
a Dask cluster."""

import click

from medalpy.cli._common import UserError, data_dir_option, overwrite_option, reports_errors


def _bool(text):
    value = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}
    if text.strip().lower() not in value:
        raise ValueError(text)
    return value[text.strip().lower()]


def _values(kind):
    def parse(ctx, param, text):
        if text is None:
            return None
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise click.BadParameter(f"comma-separated values, got {text!r}") from None
    return parse


@click.command()
@click.argument("dataset", required=False)
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Output directory (default: runs/search-DATASET); rerun to resume.")
@click.option("--grid", "grid_file", type=click.Path(dir_okay=False),
              help="TOML file: lists for units, lr, batch_size, momentum, weight_decay, seed; "
                   "scalars for fixed settings (the options below override it).")
@click.option("--units", callback=_values(int), help="Units per layer, e.g. 1000,1500 "
              "(paper grid: 1000,1500,2000,2500).")
@click.option("--lr", callback=_values(float), help="Learning rates (paper: 1e-1 .. 1e-5).")
@click.option("--batch-size", callback=_values(int), help="Minibatch sizes (paper: 10,20).")
@click.option("--momentum", callback=_values(float), help="Momenta (paper: 0.9,0.7).")
@click.option("--weight-decay", callback=_values(float),
              help="Weight decays (paper: 1e-3,1e-4,1e-5).")
@click.option("--normalise-gradients", callback=_values(_bool),
              help="MEDAL's normGrad values to try: on, off or on,off (default on).")
@click.option("--init-seed", "seed", callback=_values(int), help="Initialisation seeds (0).")
@click.option("--random", "n_trials", type=int,
              help="Random search: this many configurations drawn from the grid.")
@click.option("--objective", type=click.Choice(["pretrain", "classify", "classifier"]),
              help="pretrain: validation reconstruction cross-entropy (default); classify: "
                   "validation error of a classifier on the pretrained encoders; classifier: "
                   "the classifier's own settings, on the encoders of --encoders.")
@click.option("--encoders", type=click.Path(dir_okay=False),
              help="classifier objective: the model file whose encoders start every trial.")
@click.option("--folds", type=int, help="k of stratified k-fold (default: the dataset's protocol, 10 for MNIST).")
@click.option("--subset", type=int,
              help="Cross-validate on a class-balanced subset of this many training images.")
@click.option("--data-seed", type=int, help="Seed of the subset, folds and random draws.")
@click.option("--method", "methods", multiple=True,
              type=click.Choice(["gradual", "stacked", "frozen_lower", "hybrid"]),
              help="Pretraining schedule (default gradual); repeat it to score the mean over "
                   "several schedules that share layer 1.")
@click.option("--fraction", type=float, help="The hybrid's stacked fraction.")
@click.option("--n-layers", type=int, help="Hidden layers (default 2).")
@click.option("--noise", type=float, help="Masking-noise rate (default: the dataset's protocol, 0.15 for MNIST).")
@click.option("--noise-type", type=click.Choice(["masking", "salt-pepper", "gaussian"]),
              help="Kind of corruption (default masking).")
@click.option("--epochs-layer1", type=int, help="Epochs of phase 1 (default 10).")
@click.option("--budget", type=int, help="Gradual epochs per deeper phase (default 10).")
@click.option("--patience", type=int, help="Early stopping: epochs without improvement.")
@click.option("--classifier-epochs", type=int, help="classify objective: epochs (default 30).")
@click.option("--halving", "eta", type=int, metavar="ETA",
              help="Successive halving: after each rung keep the best 1/ETA configurations.")
@click.option("--rungs", type=int, help="Rungs of successive halving (default 3).")
@click.option("--backend", type=click.Choice(["numpy", "cpu"]))
@data_dir_option
@click.option("--workers", type=int, default=None,
              help="Single-threaded worker processes, a local Dask cluster when Dask is "
                   "installed (default: one per core); 0: trials in turn in this process.")
@click.option("--scheduler", metavar="ADDRESS",
              help="Run on an existing Dask cluster (tcp://host:8786) instead.")
@click.option("--retry-errors", is_flag=True, help="Run again trials recorded with an error.")
@overwrite_option
@reports_errors
def search(dataset, out_dir, grid_file, workers, scheduler, retry_errors, overwrite,
           **options):
    """Cross-validated search over the paper's hyper-parameter grid (or a subset of it) on
    DATASET (default: mnist).

    Every trial (configuration x fold) is written to OUT/cells/ as it finishes; a rerun with
    the same options resumes. Writes OUT/trials.csv, OUT/trials.md, OUT/best.toml (for
    `medalpy train --config`) and OUT/search.png (when matplotlib is installed).
    """
    from medalpy.search import SPACE, SearchSpec, read_grid, run_search
    from medalpy.cluster import executor

    space, fixed = read_grid(grid_file) if grid_file else ({}, {})
    for name in SPACE:
        if options.get(name) is not None:
            space[name] = options[name]
    fixed.update({k: v for k, v in options.items()
                  if k not in SPACE and v is not None and v != ()})
    if dataset is not None or "dataset" not in fixed:
        fixed["dataset"] = dataset or "mnist"
    try:
        spec = SearchSpec(space=space, **fixed)
    except TypeError as exc:
        raise UserError(str(exc)) from None
    out_dir = out_dir or f"runs/search-{spec.dataset}"
    from medalpy import outputs

    outputs.check(out_dir, "search", overwrite=overwrite)  # before a cluster starts
    echo = lambda message: click.echo(message, err=True)  # noqa: E731
    with executor(workers, scheduler, echo=echo) as trials_executor:
        record = run_search(spec, out_dir, executor=trials_executor, retry_errors=retry_errors,
                            echo=echo, overwrite=overwrite)
    click.echo(f"{record['trials']} trials: {record['done']} done, {record['error']} failed; "
               f"wall time {record['wall_seconds']:.1f} s")
    click.echo(f"table: {out_dir}/trials.md, {out_dir}/trials.csv")
    click.echo(f"plot: {record['plot']}" if record["plot"] else
               "plot: skipped (matplotlib is not installed)")
    best = record["best"]
    if best is None:
        click.echo("no configuration finished every fold; see the errors in trials.md")
        raise SystemExit(1)
    click.echo(f"best: {best['config']}: {record['objective']} {best['mean']:.4f} "
               f"+- {best['std']:.4f} over {best['eval_folds']} of {spec.folds} nested folds")
    use = ("the classifier's settings: classify --lr ..., experiment --classifier-lr ..."
           if spec.objective == "classifier" else f"medalpy train --config {out_dir}/best.toml")
    click.echo(f"best configuration: {out_dir}/best.toml ({use})")

"""``medalpy experiment NAME``: the paper's experiments, resumable, with reports and figures."""

import click

from medalpy.cli._common import data_dir_option, reports_errors
from medalpy.config import BACKENDS


@click.command()
@click.argument("name", type=click.Choice(["fsweep", "trainsize", "ablation", "list"]))
@click.option("--dataset", default="mnist", show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Output directory (default: runs/experiment-NAME-SCALE).")
@click.option("--scale", type=click.Choice(["smoke", "quick", "medium", "paper"]),
              default="quick", show_default=True,
              help="smoke: seconds, checks the pipeline; quick: minutes; medium: the paper's "
                   "network, a tenth of its epochs; paper: the paper's protocol.")
@click.option("--splits", type=int, default=3, show_default=True,
              help="Train/validation splits to average over.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--backend", type=click.Choice(list(BACKENDS)), default="cpu")
@click.option("--workers", type=int,
              help="Run the cells on a local Dask cluster of N single-threaded processes.")
@click.option("--scheduler", metavar="ADDRESS", help="Run the cells on an existing Dask cluster.")
@data_dir_option
@reports_errors
def experiment(name, dataset, out_dir, scale, splits, seed, backend, workers, scheduler,
               data_dir):
    """Run experiment NAME (fsweep, trainsize, ablation), or `list` them with their costs."""
    if name == "list":
        from medalpy.experiments.costs import describe

        click.echo(describe(dataset, data_dir))
        return
    from medalpy.experiments import run_experiment

    out_dir = out_dir or f"runs/experiment-{name}-{scale}"
    echo = lambda message: click.echo(message, err=True)  # noqa: E731
    kwargs = dict(scale=scale, splits=splits, data_dir=data_dir, backend=backend, seed=seed,
                  echo=echo)
    if workers or scheduler:
        from medalpy.cluster import dask_client

        with dask_client(workers, scheduler, echo=echo) as client:
            record = run_experiment(name, dataset, out_dir, client=client, **kwargs)
    else:
        record = run_experiment(name, dataset, out_dir, **kwargs)
    click.echo((open(f"{out_dir}/report.md").read()).rstrip())
    click.echo(f"\nresults in {out_dir}/ (results.json, report.md"
               f"{', ' + ', '.join(p.rsplit('/', 1)[1] for p in record['figures']) if record['figures'] else ''})")

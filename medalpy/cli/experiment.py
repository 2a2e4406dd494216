"""``medalpy experiment NAME``: the paper's experiments, resumable, with reports and figures."""

import click

from medalpy import settings
from medalpy.cli._common import (
    data_dir_option,
    overwrite_option,
    reports_errors,
    setting_options,
)
from medalpy.config import BACKENDS

#: The pretraining settings an experiment takes from the command line.
_PRETRAINING = [settings.TRAIN_SETTINGS[name] for name in ("preset", "noise", "noise_type")]


@click.command()
@click.argument("name", type=click.Choice(["fsweep", "trainsize", "ablation", "reproduce",
                                           "lrsched", "list"]))
@click.option("--dataset", default="mnist", show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Output directory (default: runs/experiment-NAME-SCALE); rerun to resume.")
@overwrite_option
@click.option("--scale", type=click.Choice(["smoke", "quick", "medium", "paper"]),
              default="quick", show_default=True,
              help="smoke: seconds, checks the pipeline; quick: minutes; medium: the paper's "
                   "network, a tenth of its epochs; paper: the paper's protocol.")
@click.option("--splits", type=int, default=3, show_default=True,
              help="Train/validation splits to average over.")
@click.option("--seed", type=int, default=0, show_default=True)
@setting_options(_PRETRAINING)
@click.option("--fractions", help="Stacked fractions f of fsweep and reproduce, e.g. 0,1 "
                                  "(default: fsweep 0,0.25,0.5,0.75,1; reproduce 0,1).")
@click.option("--sizes", help="Classifiers' training-set sizes, e.g. 1000,10000 ('all': a "
                              "split's whole training part; 'none': no classifiers); default: "
                              "the scale's (lrsched: 1000,10000, those that fit).")
@setting_options(settings.CLASSIFIER, prefix="classifier-", show_defaults=False)
@click.option("--backend", type=click.Choice(list(BACKENDS)), default="cpu")
@click.option("--workers", type=int,
              help="Run the cells on N single-threaded worker processes (a local Dask "
                   "cluster when Dask is installed); 0: one at a time in this process, its "
                   "products on every core. Default: one worker per core, which finished "
                   "independent cells sooner (docs/performance.md); with --backend cuda, "
                   "the cells in this process, trained in cohorts (docs/gpu.md).")
@click.option("--scheduler", metavar="ADDRESS", help="Run the cells on an existing Dask cluster.")
@data_dir_option
@reports_errors
def experiment(name, dataset, out_dir, overwrite, scale, splits, seed, preset, noise,
               noise_type,
               fractions, sizes, backend, workers, scheduler, data_dir, **classifier_options):
    """Run experiment NAME (fsweep, trainsize, ablation, reproduce, lrsched), or `list` them with their
    costs.

    The classifiers' settings default to `medalpy classify`'s, or to those searched for the
    preset when it has them (paper-mnist: minibatch 10), except their epochs and patience,
    which the scale sets."""
    from medalpy.cli._common import UserError
    from medalpy.supervised import check_classifier_settings

    classifier = {k[len("classifier_"):]: v for k, v in classifier_options.items()
                  if v is not None}
    check_classifier_settings(classifier, option_prefix="classifier-")
    if fractions is not None:
        try:
            fractions = [float(part) for part in fractions.split(",")]
        except ValueError:
            raise UserError(f"--fractions must be comma-separated numbers, got "
                            f"{fractions!r}") from None
    if sizes is not None and sizes.strip() == "none":
        sizes = []  # no classifiers (yet: see docs/reproduction.md)
    elif sizes is not None:
        try:
            sizes = [None if part.strip() == "all" else int(part)
                     for part in sizes.split(",")]
        except ValueError:
            raise UserError(f"--sizes must be comma-separated integers or 'all', got "
                            f"{sizes!r}") from None
    if name == "list":
        from medalpy.experiments.costs import describe

        click.echo(describe(dataset, data_dir))
        return
    from medalpy import outputs
    from medalpy.experiments import run_experiment

    out_dir = out_dir or f"runs/experiment-{name}-{scale}"
    outputs.check(out_dir, "experiment", overwrite=overwrite)  # before a cluster starts
    echo = lambda message: click.echo(message, err=True)  # noqa: E731
    kwargs = dict(scale=scale, splits=splits, data_dir=data_dir, backend=backend, seed=seed,
                  echo=echo, preset=preset, noise=noise, classifier=classifier,
                  sizes=sizes, noise_type=noise_type or "masking", fractions=fractions,
                  overwrite=overwrite)
    from medalpy.cluster import executor
    from medalpy.kernels import get_backend

    cohorts = hasattr(get_backend(backend), "CohortStep")
    with executor(workers, scheduler, echo=echo, cohorts=cohorts) as cells_executor:
        record = run_experiment(name, dataset, out_dir, executor=cells_executor, **kwargs)
    click.echo((open(f"{out_dir}/report.md").read()).rstrip())
    click.echo(f"\nresults in {out_dir}/ (results.json, report.md"
               f"{', ' + ', '.join(p.rsplit('/', 1)[1] for p in record['figures']) if record['figures'] else ''})")

"""``medalpy bench``: time full SGD training steps against their peers and the machine's
bounds, and a gradual epoch with the cores shared."""

import click

from medalpy.bench.steps import IMPLEMENTATIONS, PHASES
from medalpy.cli._common import data_dir_option, overwrite_option, reports_errors


@click.command()
@click.option("--phase", "phases", multiple=True, type=click.Choice(list(PHASES)),
              help="Phase to time (repeatable; default all): layer1 784-1000-784, stacked "
                   "1000-1000-1000 on codes, gradual 784-1000-1000-784, supervised "
                   "784-1000-1000-10.")
@click.option("--batch-size", "batch_sizes", multiple=True, type=click.IntRange(1),
              help="Batch size (repeatable; default 10, 20, 128).")
@click.option("--implementation", "implementations", multiple=True,
              type=click.Choice(list(IMPLEMENTATIONS)),
              help="What to time (repeatable; default all available): cpu (medalpy without "
                   "normGrad, as the peers), cpu-normgrad, numpy (the reference backend), "
                   "and the peers torch, torch-compile and jax when installed "
                   "(pip install -e .[peers]).")
@click.option("--repeats", type=click.IntRange(1), default=5, show_default=True,
              help="Interleaved repetitions per cell (median, min, max reported).")
@click.option("--seconds", type=click.FloatRange(0.0, min_open=True), default=0.25,
              show_default=True, help="About how long one repetition lasts.")
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True,
              help="Lanes, BLAS and peer threads.")
@click.option("--memory/--no-memory", default=True, show_default=True,
              help="Also measure peak RSS (and the gradual epoch time) of a shortened "
                   "`medalpy train mnist --gradual --scale medium` run on full MNIST.")
@click.option("--contention", is_flag=True,
              help="Also time a gradual epoch while another process keeps a core busy "
                   "(arithmetic, then memory streaming), with the lanes' governor and "
                   "with the lanes fixed.")
@click.option("--contention-steps", type=click.IntRange(1), default=3000, show_default=True,
              help="Steps in the --contention epoch (3,000 at batch 20 is one MNIST "
                   "epoch).")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--output", type=click.Path(dir_okay=False), help="Also write the JSON here.")
@overwrite_option
@reports_errors
def bench(phases, batch_sizes, implementations, repeats, seconds, threads, memory, contention,
          contention_steps, data_dir, as_json, output, overwrite):
    """Time one full training step (corruption, forward, loss, backward, update).

    Compares medalpy's cpu backend, its numpy reference backend and the peers that are
    installed (PyTorch eager and torch.compile, a jitted JAX step) in one run with
    interleaved repetitions, and reports each against the bound that the machine's
    bandwidth and float32 GEMM peak, measured in the same run, allow.
    """
    import json

    from medalpy import bench as b
    from medalpy import outputs

    if output:  # checked before the minutes of timing, not after
        outputs.check_file(output, overwrite)
    import numba

    if threads > numba.config.NUMBA_NUM_THREADS:
        raise click.UsageError(f"--threads {threads}: at most {numba.config.NUMBA_NUM_THREADS} "
                               "here (the cores, or NUMBA_NUM_THREADS)")
    missing = [name for name in implementations if name not in b.available_implementations()]
    if missing:
        raise click.UsageError(f"--implementation {missing[0]}: its library is not installed "
                               "(pip install -e .[peers])")

    say = lambda line: click.echo(line, err=True)  # noqa: E731
    result = b.run_bench(phases=phases or tuple(b.PHASES),
                         batch_sizes=batch_sizes or b.BATCH_SIZES,
                         implementations=implementations or None, repeats=repeats,
                         seconds=seconds, threads=threads, progress=say)
    if memory:
        say("measuring peak memory of a full-MNIST training run ...")
        result["memory"] = b.memory_run(data_dir=data_dir, threads=threads)
    if contention:
        from medalpy.bench import contention as c

        result["contention"] = c.run_contention(contention_steps, threads, progress=say)
    text = json.dumps(result, indent=2)
    if output:
        from medalpy.atomic import write_text_atomic

        write_text_atomic(output, text + "\n")
    click.echo(text if as_json else b.format_table(result))

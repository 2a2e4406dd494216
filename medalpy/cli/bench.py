"""``medalpy bench``: time full SGD training steps against PyTorch and the GEMM peak."""

import click

from medalpy.cli._common import data_dir_option, overwrite_option, reports_errors

_PHASES = ("layer1", "stacked", "gradual", "supervised")


@click.command()
@click.option("--phase", "phases", multiple=True, type=click.Choice(_PHASES),
              help="Phase to time (repeatable; default all): layer1 784-1000-784, stacked "
                   "1000-1000-1000 on codes, gradual 784-1000-1000-784, supervised "
                   "784-1000-1000-10.")
@click.option("--batch-size", "batch_sizes", multiple=True, type=click.IntRange(1),
              help="Batch size (repeatable; default 10, 20, 128).")
@click.option("--implementation", "implementations", multiple=True,
              type=click.Choice(["cpu", "numpy", "torch"]),
              help="What to time (repeatable; default cpu, numpy and torch when installed).")
@click.option("--repeats", type=click.IntRange(1), default=5, show_default=True,
              help="Interleaved repetitions per cell (median, min, max reported).")
@click.option("--seconds", type=click.FloatRange(0.0, min_open=True), default=0.25,
              show_default=True, help="About how long one repetition lasts.")
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True,
              help="BLAS and torch threads.")
@click.option("--normalise-gradients/--no-normalise-gradients", default=True,
              show_default=True, help="MEDAL's normGrad in medalpy's steps (torch has none).")
@click.option("--memory/--no-memory", default=True, show_default=True,
              help="Also measure peak RSS (and the gradual epoch time) of a shortened "
                   "`medalpy train mnist --gradual --scale medium` run on full MNIST.")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--output", type=click.Path(dir_okay=False), help="Also write the JSON here.")
@overwrite_option
@reports_errors
def bench(phases, batch_sizes, implementations, repeats, seconds, threads,
          normalise_gradients, memory, data_dir, as_json, output, overwrite):
    """Time one full training step (corruption, forward, loss, backward, update).

    Compares medalpy's cpu backend, its numpy reference backend and standard PyTorch code
    (when torch is installed) in one run with interleaved repetitions, and reports each
    against the machine's float32 GEMM peak (a 2048^3 product measured in the same run).
    """
    import json

    from medalpy import bench as b
    from medalpy import outputs

    if output:  # checked before the minutes of timing, not after
        outputs.check_file(output, overwrite)

    say = lambda line: click.echo(line, err=True)  # noqa: E731
    result = b.run_bench(phases=phases or tuple(b.PHASES),
                         batch_sizes=batch_sizes or b.BATCH_SIZES,
                         implementations=implementations or None, repeats=repeats,
                         seconds=seconds, threads=threads,
                         normalise_gradients=normalise_gradients, progress=say)
    if memory:
        say("measuring peak memory of a full-MNIST training run ...")
        result["memory"] = b.memory_run(data_dir=data_dir, threads=threads)
    text = json.dumps(result, indent=2)
    if output:
        from medalpy.atomic import write_text_atomic

        write_text_atomic(output, text + "\n")
    click.echo(text if as_json else b.format_table(result))

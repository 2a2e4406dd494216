"""``medalpy export MODEL --format mat OUT.mat`` and ``medalpy import IN.mat --out DIR``: a
network as plain MATLAB/Octave structures and back (:mod:`medalpy.matlab`)."""

import click

from medalpy.cli._common import overwrite_option, reports_errors


@click.command("export")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["mat"]), default="mat", show_default=True,
              help="mat: MATLAB 5 structures, read by MATLAB, GNU Octave and scipy.io.")
@overwrite_option
@reports_errors
def export(model, out, fmt, overwrite):
    """Write MODEL's network (W fan_out x fan_in, as MEDAL stores it) and settings to OUT;
    contrib/medalpy_reconstruct.m reconstructs inputs from it."""
    from medalpy import outputs
    from medalpy.matlab import export_mat

    outputs.check_file(out, overwrite=overwrite)
    export_mat(model, out)
    click.echo(f"wrote {out}")


@click.command("import")
@click.argument("mat_file", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Folder for model.h5.")
@overwrite_option
@reports_errors
def import_(mat_file, out_dir, overwrite):
    """Read a .mat model written by `medalpy export` into OUT/model.h5."""
    from medalpy.matlab import import_mat

    click.echo(f"wrote {import_mat(mat_file, out_dir, overwrite=overwrite)}")

"""``medalpy data``: list, inspect, fetch, verify and locate datasets.

Imports stay cheap (NumPy, no Numba): this module is loaded for ``medalpy data --help``.
"""

import json

import click

from medalpy.cli._common import UserError, data_dir_option, reports_errors
from medalpy.data import dataset_names, find, get_spec, info as dataset_info, verify as verify_dataset
from medalpy.data.datasets import _download_target
from medalpy.data.fetch import fetch as fetch_dataset
from medalpy.data.resolve import locate

_NAME = click.argument("name", metavar="NAME")


@click.group(name="data")
def data():
    """List, inspect, fetch and verify datasets."""


@data.command(name="list")
@data_dir_option
@reports_errors
def list_(data_dir):
    """Every dataset medalpy knows and where it resolves."""
    for name in dataset_names():
        spec = get_spec(name)
        try:
            hit = locate(spec, data_dir)
            where = "not found" if hit is None else f"{hit[1]} ({hit[0]})"
        except Exception as exc:  # noqa: BLE001 - a damaged place is shown, not fatal here
            where = f"PROBLEM: {exc}"
        click.echo(f"{name:14s} {where}")
        click.echo(f"{'':14s} {spec.description}")


@data.command()
@_NAME
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
@reports_errors
def info(name, data_dir, as_json):
    """Describe dataset NAME: shapes, files, checksums, sources, where it resolves."""
    d = dataset_info(name, data_dir)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    click.echo(f"{d['name']}: {d['description']}")
    click.echo(f"  classes: {d['n_classes']}, image shape: {tuple(d['image_shape'])}, "
               f"train: {d['n_train']}, test: {d['n_test']}")
    click.echo(f"  found: {d['found'] or 'not found'}")
    click.echo("  searched: " + "; ".join(d["searched"]))
    for fn, md5 in d["files"].items():
        click.echo(f"  file {fn}  md5 {md5 or '(none published)'}")
    for url in d["sources"]:
        click.echo(f"  source {url}")
    if d["fallback"]:
        click.echo(f"  fallback when unavailable: {d['fallback']}")
    click.echo(f"  licence: {d['licence']}")


@data.command()
@_NAME
@data_dir_option
@reports_errors
def fetch(name, data_dir):
    """Download dataset NAME (into DATA_DIR/NAME or the user cache) unless already present."""
    spec = get_spec(name)
    hit = locate(spec, data_dir)
    if hit is not None:
        click.echo(f"{name} is already present in {hit[1]} ({hit[0]})")
        return
    if not spec.urls:
        raise UserError(f"dataset {name!r} cannot be downloaded; it is bundled with medalpy")
    target = _download_target(spec, data_dir)
    bars = {}

    def progress(filename, done, total):
        if total is None:
            return
        if filename not in bars:
            bar = click.progressbar(
                length=total, label=filename, file=click.get_text_stream("stderr")
            )
            bars[filename] = [bar.__enter__(), 0]
        entry = bars[filename]
        entry[0].update(done - entry[1])
        entry[1] = done

    try:
        fetch_dataset(spec, target, progress=progress)
    finally:
        for bar, _ in bars.values():
            bar.__exit__(None, None, None)
    click.echo(f"{name} downloaded into {target}, checksums good")


@data.command()
@_NAME
@data_dir_option
@reports_errors
def verify(name, data_dir):
    """Check the checksums and shapes of every file of dataset NAME; exit 2 if any is bad."""
    rows = verify_dataset(name, data_dir)
    for row in rows:
        click.echo(f"{'good' if row['ok'] else 'BAD '}  {row['file']}: {row['detail']}")
    bad = [r for r in rows if not r["ok"]]
    if bad:
        raise UserError(f"{len(bad)} of {len(rows)} files of {name} are bad")
    click.echo(f"all {len(rows)} files of {name} are good")


@data.command()
@_NAME
@data_dir_option
@reports_errors
def path(name, data_dir):
    """Print where dataset NAME resolves on disk (no download)."""
    _, where = find(name, data_dir)
    click.echo(str(where))

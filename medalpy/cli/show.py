"""``medalpy show MODEL``: first-layer filters and test reconstructions as PNG images."""

from pathlib import Path

import click

from medalpy.cli._common import data_dir_option, overwrite_option, reports_errors


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("dataset", required=False)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True)
@overwrite_option
@click.option("--count", type=click.IntRange(1, 400), default=100, show_default=True,
              help="Filters to show.")
@click.option("--digits", type=click.IntRange(1, 100), default=10, show_default=True,
              help="Test images to reconstruct.")
@data_dir_option
@reports_errors
def show(model, dataset, out_dir, count, digits, data_dir, overwrite):
    """Write OUT/filters.png and OUT/reconstructions.png (clean | corrupted | reconstruction)."""
    from medalpy import checkpoint, outputs
    from medalpy.data import load

    outputs.check(out_dir, "show", overwrite=overwrite)
    saved = checkpoint.load(model)
    net, config = saved["network"], saved["config"]
    ds = load(dataset or config.get("dataset", "mnist"), data_dir,
              grayscale=config.get("grayscale", False))
    with outputs.claim(out_dir, "show", overwrite=overwrite) as out:
        _draw(out, net, config, ds, count, digits)
    click.echo(f"wrote {Path(out_dir) / 'filters.png'} and "
               f"{Path(out_dir) / 'reconstructions.png'}")


def _draw(out, net, config, ds, count, digits):
    import numpy as np

    from medalpy.evaluation import reconstruct
    from medalpy.kernels import get_backend
    from medalpy.visualise import filters_image, reconstructions_image, write_png

    write_png(out / "filters.png", filters_image(net.encoders[0].W, ds.image_shape, count),
              zoom=2)
    rows = np.arange(min(digits, ds.test_images.shape[0]))
    corrupted, recon = reconstruct(get_backend("cpu"), net, ds.test_images, rows,
                                   config.get("noise", 0.15),
                                   noise_type=config.get("noise_type", "masking"))
    clean = ds.test_images[rows] / 255.0
    write_png(out / "reconstructions.png",
              reconstructions_image(clean, corrupted, recon, ds.image_shape), zoom=2)

"""The ``medalpy`` command: one click group, one thin module per command.

Sub-commands are imported only when invoked, so ``medalpy --help`` and ``medalpy --version``
never import NumPy-heavy modules or compile Numba kernels.
"""

import importlib

import click

from medalpy import __version__

# command name -> (module, attribute, one-line help shown by ``medalpy --help``)
_COMMANDS = {
    "bench": ("medalpy.cli.bench", "bench", "Time training steps against PyTorch and GEMM peak."),
    "data": ("medalpy.cli.data", "data", "List, inspect, fetch and verify datasets."),
    "train": ("medalpy.cli.train", "train", "Pretrain a deep denoising autoencoder."),
    "evaluate": ("medalpy.cli.evaluate", "evaluate", "Recompute a saved model's test metrics."),
    "classify": ("medalpy.cli.classify", "classify",
                 "Fine-tune a classifier initialised from pretrained encoders."),
    "export": ("medalpy.cli.interop", "export",
               "Write a model as MATLAB/Octave structures (.mat)."),
    "import": ("medalpy.cli.interop", "import_", "Read a .mat model back into model.h5."),
    "show": ("medalpy.cli.show", "show", "Draw first-layer filters and reconstructions (PNG)."),
    "experiment": ("medalpy.cli.experiment", "experiment",
                   "Run the experiments (fsweep, trainsize, ablation, reproduce, lrsched)."),
    "search": ("medalpy.cli.search", "search", "Cross-validated hyper-parameter search."),
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx):
        return sorted(_COMMANDS)

    def get_command(self, ctx, name):
        if name not in _COMMANDS:
            return None
        module, attr, _ = _COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, _COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="medalpy")
def main():
    """Train deep denoising autoencoders gradually or stacked (Kalmanovich & Chechik 2015)."""

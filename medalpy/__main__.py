"""``python -m medalpy`` runs the command-line interface."""

from medalpy.cli import main

main(prog_name="medalpy")

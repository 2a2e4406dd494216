"""Helpers shared by the command modules: one way to report a user error."""

import functools

import click

from medalpy.errors import MedalpyError
from medalpy.kernels import BackendError


class UserError(click.ClickException):
    """A one-line error without traceback; exit code 2 like click's own usage errors."""

    exit_code = 2


def reports_errors(func):
    """Turn medalpy's own errors raised inside a command into a one-line message, exit 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (MedalpyError, BackendError) as exc:
            raise UserError(str(exc)) from exc

    return wrapper


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=str),
    envvar="MEDALPY_DATA",
    default=None,
    help="Directory holding datasets (NAME/ files inside); also read from $MEDALPY_DATA.",
)

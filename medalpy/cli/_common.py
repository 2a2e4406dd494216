"""Helpers shared by the command modules: one way to report a user error, and options
defined once (the data directory; every setting of :mod:`medalpy.settings`)."""

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
        except MemoryError as exc:  # NumPy names the array it could not allocate
            raise UserError(f"not enough memory: {exc} (smaller --layers or --batch-size?)"
                            ) from exc

    return wrapper


overwrite_option = click.option(
    "--overwrite", is_flag=True,
    help="Write into --out even when it holds another command's results or a finished one "
         "(they are replaced, file by file).")

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=str),
    envvar="MEDALPY_DATA",
    default=None,
    help="Directory holding datasets (NAME/ files inside); also read from $MEDALPY_DATA.",
)


def setting_options(declared, prefix="", show_defaults=True):
    """A decorator adding one click option per setting of ``declared`` (a sequence of
    :class:`medalpy.settings.Setting` with ``option`` set): ``--{prefix}name-with-dashes``,
    its help and choices from the declaration, default None (not given), so that values
    from files and presets keep their precedence. The parameter is ``{prefix}name`` with
    underscores. ``show_defaults=False`` leaves the declared defaults out of the help (for
    commands that choose other defaults)."""

    def decorate(func):
        for setting in reversed([s for s in declared if s.option]):
            flag = f"--{prefix}{setting.name}".replace("_", "-")
            param = f"{prefix}{setting.name}".replace("-", "_")
            help_text = setting.help
            if setting.default is not None and show_defaults:
                shown = str(setting.default).lower() if setting.kind == "bool" else \
                    setting.default
                help_text += f" [default: {shown}]"
            if setting.kind == "bool":
                off = f"--{prefix}no-{setting.name}".replace("_", "-")
                option = click.option(f"{flag}/{off}", param, default=None, help=help_text)
            else:
                allowed = setting.allowed()
                kind = {"int": int, "float": float}.get(setting.kind, str)
                if allowed is not None:
                    kind = click.Choice([str(a) for a in allowed])
                option = click.option(flag, param, type=kind, default=None, help=help_text)
            func = option(func)
        return func

    return decorate

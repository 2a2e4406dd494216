"""Where a command writes its results: checked before any work, locked while it runs.

Every command that writes results claims its output folder first (:func:`claim`):

* the folder must be writable (a one-line error naming it otherwise, before any training);
* a folder holding *another* command's results, or a *finished* result of this command, is
  refused unless ``overwrite`` (``--overwrite``); ``train`` continues an unfinished run only
  with ``resume``; ``experiment`` and ``search`` resume when rerun into their own folder;
* a lock (``OUT/.medalpy.lock``, held with ``flock`` for the life of the process, so a killed
  run never leaves it stuck) makes a second run into the same folder stop at once;
* temporary files left by killed writers (``.NAME.tmpPID`` whose process is gone) are removed;
* a folder the claim made is removed again when the run stops before writing anything in it.

What each command leaves in its folder is :data:`MARKERS`: the files that say "this folder
holds that command's results" (the first of them says "finished").
"""

import contextlib
import fcntl
import os
import re
from pathlib import Path

from medalpy.errors import ConfigError

#: command -> (the file of a finished result, other files it writes).
MARKERS = {
    "train": ("model.h5", ("checkpoint.h5", "metrics.json", "log.jsonl")),
    "classify": ("classifier.h5", ("metrics.json",)),
    "experiment": ("results.json", ("experiment.json", "report.md")),
    "search": ("results.json", ("search.json", "trials.md")),
    "show": ("reconstructions.png", ("filters.png",)),
}
#: Commands that resume when rerun into their own folder.
RESUMABLE = {"experiment", "search"}
LOCK = ".medalpy.lock"
_TMP = re.compile(r"^\..+\.tmp(\d+)$")


def owner(folder):
    """The command whose results ``folder`` holds, or None (empty, absent, or foreign files
    only). The file only one command writes decides: experiment.json, search.json,
    classifier.h5 (classify also writes a metrics.json), then train's and show's files."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    names = {p.name for p in folder.iterdir()}
    for command in ("experiment", "search"):
        if MARKERS[command][1][0] in names:
            return command
    if "classifier.h5" in names:
        return "classify"
    for command in ("train", "show"):
        done, others = MARKERS[command]
        if done in names or names & set(others):
            return command
    return None


def finished(folder, command):
    return (Path(folder) / MARKERS[command][0]).exists()


def check(folder, command, resume=False, overwrite=False):
    """Refuse to write ``command``'s results into ``folder`` when that would lose others
    (see the module docstring); raises ConfigError naming the folder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder}: not a directory")
    held = owner(folder)
    if held is None or overwrite:
        return
    if held != command:
        raise ConfigError(f"{folder} holds the results of `medalpy {held}`; choose another "
                          "--out, or pass --overwrite to replace them")
    if command in RESUMABLE:
        return
    if command == "train":
        has_checkpoint = (folder / "checkpoint.h5").exists()
        if resume and has_checkpoint:
            return  # (a finished run resumes to its end at once)
        if resume:
            raise ConfigError(f"{folder}: no checkpoint.h5 to resume; choose another --out, "
                              "or pass --overwrite to replace what is there")
        if has_checkpoint and not finished(folder, command):
            raise ConfigError(f"{folder / 'checkpoint.h5'} exists: pass --resume to continue "
                              "that run, or choose another --out")
    raise ConfigError(f"{folder} holds a finished `medalpy {command}` result; choose another "
                      "--out, or pass --overwrite to replace it")


def check_file(path, overwrite=False):
    """A single result file (``bench --output``): refused when it exists unless
    ``overwrite``, or when its folder cannot be written; nothing is created."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory")
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} exists; choose another file, or pass --overwrite")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such directory")
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"{folder}: cannot write there")


def _writable(folder):
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".medalpy-probe{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{folder}: cannot write there ({exc.strerror})") from None


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder):
    """Delete ``.NAME.tmpPID`` files (atomic writes interrupted by a kill) of dead processes
    in ``folder`` and all its sub-folders (cells keep theirs several levels down); returns
    how many."""
    n = 0
    folder = Path(folder)
    for path in folder.rglob(".*.tmp*"):
        match = _TMP.match(path.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            n += 1
    return n


@contextlib.contextmanager
def claim(folder, command, resume=False, overwrite=False):
    """Check ``folder`` for ``command`` (:func:`check`), make it, make sure it is writable,
    remove stale temporary files, and hold its lock until the block ends."""
    folder = Path(folder)
    check(folder, command, resume, overwrite)
    created = not folder.exists()
    _writable(folder)
    handle = open(folder / LOCK, "a")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{folder}: another medalpy run is writing there now") from None
        remove_stale_temporaries(folder)
        yield folder
    except BaseException:
        # A run that stopped before writing anything leaves no folder behind it.
        if created and [p.name for p in folder.iterdir()] == [LOCK]:
            (folder / LOCK).unlink()
            folder.rmdir()
        raise
    finally:
        handle.close()  # releases the lock

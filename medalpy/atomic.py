"""Atomic file writes: a temporary file in the same directory, renamed over the target.

A crash or a full disk never leaves a half-written file where a good one was, nor a stray
temporary file.
"""

import contextlib
import json
import os
from pathlib import Path


@contextlib.contextmanager
def replace_atomic(path):
    """Yield a temporary path beside ``path`` to write; it replaces ``path`` when the block
    ends without error, and is removed otherwise."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` atomically (parents are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replace_atomic(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path, value):
    """Write ``value`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(value, indent=2) + "\n")

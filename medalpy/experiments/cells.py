"""Experiment cells: independent units of work, each written to disk as soon as it finishes.

A cell is a key (``split0/f0.25``), the name of a step function in
:mod:`medalpy.experiments.steps` (or a dotted path to one elsewhere), JSON parameters and the
keys of the cells it needs first.
Its result is written atomically to ``OUT/cells/KEY.json``; a rerun skips every cell whose
result is there, so an interrupted experiment resumes without recomputing finished cells.
A cell that raises is recorded with its error (and the cells that need it are recorded as
skipped) without stopping the others.

Cells run one after another here, on worker processes, or on a Dask cluster (the executors of
:mod:`medalpy.cluster`; ``medalpy search`` uses the same runner): a cell is submitted as soon
as the cells it needs have finished.
"""

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from medalpy.atomic import write_json_atomic


@dataclass(frozen=True)
class Cell:
    key: str
    step: str
    params: dict = field(default_factory=dict, hash=False, compare=False)
    needs: tuple = ()


def result_path(out_dir, key):
    return Path(out_dir) / "cells" / f"{key}.json"


def work_dir(out_dir, key):
    """The directory where a cell keeps its files (models), made on demand."""
    path = Path(out_dir) / "cells" / key
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_result(out_dir, key):
    path = result_path(out_dir, key)
    return json.loads(path.read_text()) if path.exists() else None


def step_function(step):
    """A step name of :mod:`medalpy.experiments.steps`, or a dotted path ``package.module.fn``."""
    import importlib

    if "." in step:
        module, name = step.rsplit(".", 1)
        return getattr(importlib.import_module(module), name)
    from medalpy.experiments import steps

    return getattr(steps, step)


def forget_failed(out_dir, cells):
    """Delete the records of ``cells`` that failed or were skipped, so that they run again;
    returns how many."""
    n = 0
    for cell in cells:
        result = read_result(out_dir, cell.key)
        if result is not None and result.get("status") != "done":
            result_path(out_dir, cell.key).unlink()
            n += 1
    return n


def execute(step, params, key, out_dir):
    """Run one cell's step function; returns its result, or a record of its error."""
    t0 = time.perf_counter()
    try:
        result = step_function(step)(params, work_dir(out_dir, key), out_dir)
        status = {"status": "done"}
    except Exception as exc:  # recorded, so that one bad cell does not stop an experiment
        result = {}
        status = {"status": "error", "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc(limit=8)}
    return {"key": key, "step": step, "params": params, **status, **result,
            "seconds": time.perf_counter() - t0}


def _finished(executor, pending, by_key):
    """Wait for at least one of the ``pending`` futures (future -> key) and return the results
    of those that finished, removing them from ``pending``.

    No reference to a finished future outlives this call: a Dask cluster keeps the result of
    a future someone still holds, and computes it again when the worker that held it is lost
    (a cell already on disk, run a second time for nothing).
    """
    results = []
    for future in executor.wait_any(list(pending)):
        key = pending.pop(future)
        try:
            results.append(future.result())
        except Exception as exc:  # the worker died or the task was lost
            cell = by_key[key]
            results.append({"key": key, "step": cell.step, "params": cell.params,
                            "status": "error", "error": f"{type(exc).__name__}: {exc}",
                            "seconds": 0.0})
    return results


def run_cells(cells, out_dir, executor=None, echo=None):
    """Run every cell not finished yet, in dependency order; returns ``{key: result}``.

    Parameters
    ----------
    cells : list of :class:`Cell`.
    out_dir : the experiment's directory.
    executor : where cells run (:mod:`medalpy.cluster`: ``Here``, ``Processes``, ``Dask``);
        default ``Here``, one after another in this process.
    echo : optional function receiving one-line progress messages.
    """
    from medalpy.cluster import Here

    executor = executor or Here()
    echo = echo or (lambda message: None)
    by_key = {cell.key: cell for cell in cells}
    results = {key: r for key in by_key if (r := read_result(out_dir, key)) is not None}
    if results:
        echo(f"{len(results)} of {len(cells)} cells already done; resuming")

    def record(result):
        results[result["key"]] = result
        write_json_atomic(result_path(out_dir, result["key"]), result)
        done = sum(1 for r in results.values() if r.get("status") == "done")
        extra = f" ({result['error']})" if result["status"] != "done" else ""
        echo(f"[{done}/{len(cells)}] {result['key']}: {result['status']} in "
             f"{result['seconds']:.0f} s{extra}")

    def blocked(cell):
        bad = [n for n in cell.needs if n in results and results[n].get("status") != "done"]
        if bad and cell.key not in results:
            record({"key": cell.key, "step": cell.step, "params": cell.params,
                    "status": "skipped", "error": f"needs failed cell(s) {', '.join(bad)}",
                    "seconds": 0.0})
            return True
        return False

    pending = {}  # future -> key: submitted, not recorded yet

    def submit_ready():
        # A cell goes as soon as the cells it needs are done, in the order of ``cells``;
        # a skipped cell may block others in turn, so skip until nothing changes.
        changed = True
        while changed:
            changed = False
            submitted = set(pending.values())
            for cell in cells:
                if cell.key in results or cell.key in submitted:
                    continue
                if blocked(cell):
                    changed = True
                elif all(n in results for n in cell.needs):
                    future = executor.submit(execute, cell.step, cell.params, cell.key,
                                             str(out_dir), key=cell.key)
                    pending[future] = cell.key
                    submitted.add(cell.key)

    submit_ready()
    while pending:
        for result in _finished(executor, pending, by_key):
            record(result)
        submit_ready()
    for cell in cells:  # needs that name no cell of the list: nothing could run them
        if cell.key not in results:
            missing = [n for n in cell.needs if n not in results]
            record({"key": cell.key, "step": cell.step, "params": cell.params,
                    "status": "skipped", "seconds": 0.0,
                    "error": f"needs cell(s) that never ran: {', '.join(missing)}"})
    return results

"""Where cells run: a local Dask cluster of single-threaded worker processes, or an existing
cluster at a scheduler address.

Each local worker is a separate process with one thread, and its BLAS, OpenMP and Numba
thread pools are held to one thread too, so N workers use N cores without fighting over
them. ``dask.distributed`` is an optional dependency (the ``dask`` extra); :func:`require`
gives one clear message when it is missing.
"""

import contextlib
import os

from medalpy.errors import ConfigError

#: Thread pools of every worker process, held to one thread.
SINGLE_THREAD_ENV = {name: "1" for name in (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS")}

MISSING = ("this needs Dask's distributed scheduler, which is not installed: "
           "pip install 'medalpy[dask]' (or: pip install 'dask[distributed]')")


class DaskMissing(ConfigError):
    """``dask.distributed`` is not installed."""


def require():
    """Import ``distributed``, or raise :class:`DaskMissing` with the install command."""
    try:
        import distributed
    except ImportError:
        raise DaskMissing(MISSING) from None
    return distributed


def local_cluster(n_workers, host="127.0.0.1", **kwargs):
    """A ``LocalCluster`` of ``n_workers`` single-threaded worker processes on ``host``."""
    distributed = require()
    if n_workers < 1:
        raise ConfigError(f"workers must be at least 1, got {n_workers}")
    # The nanny starts each worker with this environment, before NumPy loads its BLAS.
    env = {**SINGLE_THREAD_ENV, **kwargs.pop("env", {})}
    return distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                    host=host, dashboard_address=":0", env=env, **kwargs)


@contextlib.contextmanager
def dask_client(workers=None, scheduler=None, echo=None):
    """A ``distributed.Client``: to ``scheduler`` when given, else to a new local cluster.

    The local cluster is closed on exit; an existing cluster is left running.
    """
    distributed = require()
    echo = echo or (lambda message: None)
    if scheduler:
        try:
            client = distributed.Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        with client:
            n = len(client.scheduler_info().get("workers", {}))
            echo(f"dask: scheduler {scheduler}, {n} worker(s)")
            yield client
        return
    workers = workers or default_workers()
    with local_cluster(workers) as cluster, distributed.Client(cluster) as client:
        echo(f"dask: local cluster of {workers} single-threaded worker process(es) at "
             f"{cluster.scheduler_address}")
        yield client


def default_workers():
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)

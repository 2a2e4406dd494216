"""Where cells run: the ways to execute the cells of an experiment or a search, for
:func:`medalpy.experiments.cells.run_cells`.

- :class:`Here`: one after another in this process (its products on the cpu backend's
  lanes, every core);
- :class:`Processes`: N single-threaded worker processes of the standard library;
- :class:`Dask`: a local Dask cluster of N single-threaded worker processes, or an existing
  cluster at a scheduler address;
- :class:`Cohorts`: threads of this process taking turns, their epochs batched into one
  device step (:mod:`medalpy.cohort`; the cuda backend's default).

Each local worker is a separate process with one thread, and its BLAS, OpenMP and Numba
thread pools are held to one thread too, so N workers use N cores without fighting over
them. A cell's result does not depend on where it ran (the cpu backend's arithmetic is the
same on one lane or many). ``dask.distributed`` is an optional dependency (the ``dask``
extra); :func:`require` gives one clear message when it is missing, and :func:`executor`
falls back to :class:`Processes` without it.

An executor has two methods: ``submit(fn, *args, key=...)`` returns a future (``result()``
gives ``fn(*args)`` or raises), and ``wait_any(futures)`` blocks until at least one of them
has finished and returns those that have.
"""

import concurrent.futures
import concurrent.futures.process
import contextlib
import multiprocessing
import os
import threading
import time

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


class _Deferred:
    """A call run when waited for: :class:`Here` runs one cell at a time, so each cell's
    result is recorded before the next one starts."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def run(self):
        try:
            self.value, self.error = self.fn(*self.args), None
        except Exception as exc:  # raised again by result(), as a pool's future would
            self.value, self.error = None, exc

    def result(self):
        if self.error is not None:
            raise self.error
        return self.value


class Here:
    """Cells one after another in this process."""

    def submit(self, fn, *args, key=None):
        return _Deferred(fn, args)

    def wait_any(self, futures):
        first = futures[0]
        first.run()
        return [first]


class Cohorts:
    """Cells in threads of this process, as members of one :class:`medalpy.cohort.Cohort`:
    one runs at a time and their epochs are batched where their steps match (the cuda
    backend's batched step). Threads start when the runner first waits, so the cells it
    submitted together meet at their first epoch."""

    def __init__(self):
        from medalpy.cohort import Cohort

        self.cohort = Cohort()
        self.unstarted = []

    def submit(self, fn, *args, key=None):
        future = concurrent.futures.Future()
        self.unstarted.append((future, self.cohort.register(), fn, args))
        return future

    def _run(self, future, member, fn, args):
        with self.cohort.member(member):
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # the runner records it as the cell's error
                future.set_exception(exc)

    def wait_any(self, futures):
        jobs, self.unstarted = self.unstarted, []
        for future, member, fn, args in jobs:
            try:
                threading.Thread(target=self._run, args=(future, member, fn, args),
                                 daemon=True).start()
            except BaseException as exc:  # no thread: the member must not hold up the rest
                self.cohort.withdraw(member)
                future.set_exception(exc)
        done, _ = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_COMPLETED)
        return list(done)


class Processes:
    """Cells on ``n`` single-threaded worker processes (``concurrent.futures``, spawned, so
    that each starts with its thread pools held to one thread before NumPy loads). A worker
    that dies (killed for memory, say) fails the cells running on the pool at that moment;
    the pool is then started again for the cells still to come, as Dask restarts its
    workers."""

    def __init__(self, n):
        if n < 1:
            raise ConfigError(f"workers must be at least 1, got {n}")
        self.n = n
        self.description = f"{n} single-threaded worker process(es)"
        self.pool = self._start()

    def _start(self):
        saved = {name: os.environ.get(name) for name in SINGLE_THREAD_ENV}
        os.environ.update(SINGLE_THREAD_ENV)  # inherited by the workers as they start
        try:
            pool = concurrent.futures.ProcessPoolExecutor(
                self.n, mp_context=multiprocessing.get_context("spawn"))
            # Start every worker now, while the environment holds.
            for future in [pool.submit(os.getpid) for _ in range(self.n)]:
                future.result()
            return pool
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def submit(self, fn, *args, key=None):
        try:
            return self.pool.submit(fn, *args)
        except concurrent.futures.process.BrokenProcessPool:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._start()
            return self.pool.submit(fn, *args)

    def wait_any(self, futures):
        done, _ = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_COMPLETED)
        return list(done)

    def close(self, wait=True):
        """Stop the workers; ``wait=False`` does not wait for running cells (an interrupted
        run: their results are lost, and a rerun does them again)."""
        self.pool.shutdown(wait=wait, cancel_futures=True)


class Dask:
    """Cells on a Dask cluster, through ``client``."""

    def __init__(self, client):
        self.client = client

    def submit(self, fn, *args, key=None):
        # pure=False and a unique key: a cell run again (after a failure) is a new task.
        return self.client.submit(fn, *args, key=f"medalpy-{key}-{time.time_ns()}", pure=False)

    def wait_any(self, futures):
        import distributed

        return list(distributed.wait(futures, return_when="FIRST_COMPLETED").done)


@contextlib.contextmanager
def executor(workers=None, scheduler=None, echo=None, cohorts=False):
    """The executor for ``--workers N`` / ``--scheduler ADDRESS``: an existing Dask cluster;
    N single-threaded workers (a local Dask cluster when Dask is installed, standard-library
    processes otherwise); N = 0, :class:`Here`. By default one worker per core (cells at
    once finished sooner than cells in turn on every core: docs/performance.md), or
    :class:`Here` on a one-core machine; with ``cohorts`` (a backend with a batched step:
    cuda), :class:`Cohorts` in this process."""
    echo = echo or (lambda message: None)
    if workers is not None and scheduler:
        raise ConfigError("--workers is for local worker processes; --scheduler uses an "
                          "existing cluster: give one of them")
    if workers is not None and workers < 0:
        raise ConfigError(f"--workers must be 0 or more, got {workers}")
    if cohorts and workers is None and not scheduler:
        echo("training the cells in cohorts in this process (their epochs batched on the "
             "device)")
        yield Cohorts()
        return
    if workers is None and not scheduler:
        workers = default_workers() if default_workers() > 1 else 0
    if not scheduler and workers == 0:
        yield Here()
        return
    try:
        require()
    except DaskMissing:
        if scheduler:
            raise
        pool = Processes(workers)
        echo(f"running cells on {pool.description} (Dask is not installed)")
        try:
            yield pool
        except BaseException:
            pool.close(wait=False)
            raise
        pool.close()
        return
    with dask_client(workers, scheduler, echo=echo) as client:
        yield Dask(client)

"""Cohorts: cells trained together, their epochs batched into one device step.

Many cells of an experiment train networks of the same shapes on different data: the splits
of a schedule, the phases of different hybrids that are the same kind and shape. On a GPU a
step of one such network is far too small to fill the device, so a cohort trains them
together: one launch sequence over a leading model axis (``CohortStep`` of the cuda backend,
:mod:`medalpy.kernels.cuda_cohort`) instead of one per model.

How: each member (a cell) runs its ordinary code in a thread of its own, but only one member
runs at a time; a turn passes from member to member, so everything members do on the
backend happens in turn, as if the cells ran one after another. When a member's trainer
reaches an epoch it hands it to the cohort (:meth:`Cohort.epoch`, through the context
variable :data:`current`) and waits. Once every member still running waits, the cohort groups
the waiting epochs whose steps can share launches (equal :meth:`PhaseRun.signature
<medalpy.trainer.PhaseRun.signature>`: layer shapes, trainable layers, head, dtype, batch
size, rows, noise kind and optimiser constants) and runs each group as one batched epoch
(the backend's ``CohortStep``), or each epoch by itself where the backend has no batched
step or the group has a single member. Then the members resume, in the order they joined.

Everything a member owns stays its own: data order, noise stream, optimiser state,
validation, best parameters, early stopping, checkpoints and its cell's result, written the
moment the cell finishes. A cohort's results equal those of its cells trained one by one
(bit for bit where epochs run by themselves; to round-off in a batched step).
"""

import contextvars
import threading

#: The cohort of the cell running in this thread (None: cells run by themselves).
current = contextvars.ContextVar("medalpy_cohort", default=None)


class Cohort:
    """Members taking turns; their waiting epochs batched by signature.

    ``register()`` adds a member (before its thread starts, so that members submitted
    together are all present at the first epoch); the member's thread then runs inside
    ``with cohort.member(m):``.
    """

    def __init__(self):
        self.cond = threading.Condition()
        self.members = []  # registered and not finished, in order
        self.waiting = {}  # member -> (run, batches, epoch, optimiser, scales)
        self.results = {}  # member -> the epoch's loss total, or the exception it raised
        self.turn = None
        self.local = threading.local()
        self.steps = {}  # ids of PhaseRuns -> the backend's CohortStep (its .runs)
        self.batched = []  # sizes of the groups run as one batched epoch (for reports)

    def register(self):
        member = object()
        with self.cond:
            self.members.append(member)
        return member

    def withdraw(self, member):
        """Remove a registered member whose thread never ran."""
        with self.cond:
            self.members.remove(member)
            if self.turn is member:
                self._pass_turn()

    def member(self, member):
        """Context manager: run the calling thread as ``member`` (waits for its turn)."""
        cohort = self

        class _Turn:
            def __enter__(self):
                cohort.local.member = member
                self.token = current.set(cohort)
                with cohort.cond:
                    if cohort.turn is None:
                        cohort.turn = member
                    cohort.cond.wait_for(lambda: cohort.turn is member)

            def __exit__(self, *exc):
                current.reset(self.token)
                with cohort.cond:
                    cohort.members.remove(member)
                    cohort.waiting.pop(member, None)
                    if cohort.turn is member:
                        cohort._pass_turn()
                return False

        return _Turn()

    def epoch(self, run, batches, epoch, optimiser, scales=None):
        """Hand one epoch of a member's :class:`medalpy.trainer.PhaseRun` to the cohort and
        wait for it; returns what ``run.epoch`` would (the sum of the batch losses)."""
        me = self.local.member
        with self.cond:
            self.waiting[me] = (run, batches, epoch, optimiser, scales)
            self._pass_turn()
            self.cond.wait_for(lambda: self.turn is me)
            result = self.results.pop(me)
        if isinstance(result, BaseException):
            raise result
        return result

    # -- scheduling (called with the condition held) -------------------------------------

    def _pass_turn(self):
        """Give the turn to the first member that is not waiting; when all wait, run their
        epochs and give it to the first member."""
        runnable = [m for m in self.members if m not in self.waiting]
        if not runnable and self.waiting:
            self._run_waiting()
            runnable = self.members
        self.turn = runnable[0] if runnable else None
        self.cond.notify_all()

    def _run_waiting(self):
        groups = {}
        try:
            for member in self.members:
                run, batches, _, optimiser, _ = request = self.waiting[member]
                key = run.signature(batches, optimiser)
                groups.setdefault(key, []).append((member, request))
        except BaseException as exc:  # nothing can run: every waiting member gets the error
            for member in self.waiting:
                self.results[member] = exc
            self.waiting.clear()
            return
        used = {}
        for group in groups.values():
            try:
                totals = self._run_group([request for _, request in group], used)
            except BaseException as exc:  # every member of the group gets the error
                totals = [exc] * len(group)
            for (member, _), total in zip(group, totals):
                self.results[member] = total
        self.steps = used  # steps of members that moved on are dropped
        self.waiting.clear()

    def _run_group(self, requests, used):
        runs = [request[0] for request in requests]
        make = getattr(runs[0].backend, "CohortStep", None)
        if make is None or len(runs) == 1:
            return [run.epoch(batches, epoch, optimiser, scales)
                    for run, batches, epoch, optimiser, scales in requests]
        key = tuple(id(run) for run in runs)
        step = self.steps.get(key)
        if step is None or any(a is not b for a, b in zip(step.runs, runs)):
            step = make(runs)  # a new membership
        used[key] = step
        self.batched.append(len(runs))
        return step.epoch([request[1:] for request in requests])

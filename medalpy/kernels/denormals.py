"""Denormal floats flushed to zero while the cpu backend computes (x86-64).

A float32 of magnitude below 2^-126 (about 1.2e-38) is *denormal*. Training makes them:
the sigmoid of a pre-activation below about -87 is one, and a saturated layer's activations
and deltas are full of them. Intel cores take a microcode assist for each operation that
reads or writes one: on an Intel Xeon, ``medalpy bench``'s gradual step whose second layer
had saturated ran many times slower than with denormals flushed (docs/performance.md,
"Denormals flushed to zero"). XLA flushes them by default, and so does medalpy's cpu
backend: inside :func:`medalpy.kernels.lanes.threads` (the backend's ``session()``) and in
every lane of its parallel kernels, the MXCSR's FTZ bit (a denormal result becomes 0) and
DAZ bit (a denormal operand reads as 0) are set, and put back as they were afterwards.

What it changes: a result that would be denormal is 0, and a denormal operand counts as 0,
so terms below 1.2e-38 in magnitude (2.2e-308 in float64) drop out of what is computed from
them. Where no denormal arises, every result is the same bit for bit. The NumPy reference
backend keeps denormals. On other processors :func:`flush` does nothing.
"""

import contextlib
import platform

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: The MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6) bits.
FLUSH = 0x8040
#: Whether this processor has an MXCSR to set (x86-64).
SUPPORTED = platform.machine().lower() in ("x86_64", "amd64")


def _mxcsr_call(builder, name, slot):
    fnty = ir.FunctionType(ir.VoidType(), [cgutils.voidptr_t])
    function = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.x86.sse.{name}")
    builder.call(function, [builder.bitcast(slot, cgutils.voidptr_t)])


@intrinsic
def _mxcsr_get(typingctx):
    """This thread's MXCSR (uint32)."""

    def codegen(context, builder, signature, args):
        slot = cgutils.alloca_once(builder, ir.IntType(32))
        _mxcsr_call(builder, "stmxcsr", slot)
        return builder.load(slot)

    return types.uint32(), codegen


@intrinsic
def _mxcsr_set(typingctx, bits):
    """Store ``bits`` (uint32) into this thread's MXCSR."""

    def codegen(context, builder, signature, args):
        slot = cgutils.alloca_once(builder, ir.IntType(32))
        builder.store(args[0], slot)
        _mxcsr_call(builder, "ldmxcsr", slot)
        return context.get_dummy_value()

    return types.none(types.uint32), codegen


_FLUSH_BITS = np.uint32(FLUSH)

if SUPPORTED:

    @numba.njit(cache=True, nogil=True)
    def flush():
        """Flush denormals on this thread from now on; returns the mode to :func:`restore`."""
        before = _mxcsr_get()
        _mxcsr_set(before | _FLUSH_BITS)
        return before

    @numba.njit(cache=True, nogil=True)
    def restore(before):
        """Put this thread's FTZ and DAZ bits back as ``before`` (from :func:`flush`) had
        them; its other bits (exception flags and masks, rounding) are left as they are."""
        _mxcsr_set((_mxcsr_get() & ~_FLUSH_BITS) | (before & _FLUSH_BITS))

else:

    @numba.njit(cache=True, nogil=True)
    def flush():
        """No MXCSR on this processor: nothing to set (see the module docstring)."""
        return np.uint32(0)

    @numba.njit(cache=True, nogil=True)
    def restore(before):
        """No MXCSR on this processor: nothing to restore."""
        return None


@contextlib.contextmanager
def flushed():
    """Denormals flushed to zero on the calling thread inside the block."""
    before = flush()
    try:
        yield
    finally:
        restore(before)

"""exp and log1p that vectorise, for the cpu backend's Numba kernels.

Numba has no vector math library here, so ``math.exp`` and ``math.log1p`` are scalar libm
calls; the polynomial forms below vectorise once LLVM inlines them into a loop
(``benchmarks/kernels_micro.py`` times both). Each form is accurate to < 2 eps against long
double (exp 0.83 eps in float32 and 0.78 in float64; log1p 1.8 eps in both).

:func:`exp_nonpos` and :func:`log1p_unit` dispatch on the dtype of their argument and are
callable from compiled code only.
"""

import math

import numba
import numpy as np
from numba.core import types
from numba.extending import intrinsic, overload

_inline = numba.njit(error_model="numpy")

@intrinsic
def _bits_as_float(typingctx, bits):
    """Reinterpret int32 bits as float32 (int64 as float64): builds 2**k in the exponent."""
    if bits == types.int32:
        ret = types.float32
    elif bits == types.int64:
        ret = types.float64
    else:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(ret))

    return ret(bits), codegen


_F32 = np.float32
# Cody-Waite split of ln 2 (the high part has trailing zero bits, so k * hi is exact); the
# round-to-nearest trick adds and subtracts 1.5 * 2**(mantissa bits).
_LOG2E_32 = _F32(1.4426950408889634)
_LN2HI_32, _LN2LO_32 = _F32(0.693145751953125), _F32(1.4286068203094172e-06)
_ROUND_32, _XMIN_32 = _F32(12582912.0), _F32(-104.0)
_LOG2E_64 = 1.4426950408889634
_LN2HI_64, _LN2LO_64 = 6.93147180369123816490e-01, 1.90821492927058770002e-10
_ROUND_64, _XMIN_64 = 6755399441055744.0, -746.0
# Taylor coefficients 1/k! of exp on |r| <= ln(2)/2, and 1/(2k+1) of the atanh series.
_E32 = tuple(_F32(1.0 / math.factorial(k)) for k in range(8))
_E64 = tuple(1.0 / math.factorial(k) for k in range(14))
_A32 = tuple(_F32(1.0 / (2 * k + 1)) for k in range(8))
_A64 = tuple(1.0 / (2 * k + 1) for k in range(17))


@_inline
def _exp_nonpos_32(x):
    # exp(x) = 2**k exp(r), x = k ln2 + r. Below -104 the result is 0 in float32 anyway; a NaN
    # passes the clamp and propagates through r. 2**k is applied as two halves so that
    # subnormal results (exp(-100) ~ 3.7e-44) come out right.
    x = _XMIN_32 if x < _XMIN_32 else x
    kf = (x * _LOG2E_32 + _ROUND_32) - _ROUND_32
    k = np.int32(kf)
    r = (x - kf * _LN2HI_32) - kf * _LN2LO_32
    p = _E32[7]
    p = p * r + _E32[6]
    p = p * r + _E32[5]
    p = p * r + _E32[4]
    p = p * r + _E32[3]
    p = p * r + _E32[2]
    p = p * r + _E32[1]
    p = p * r + _E32[0]
    k1 = k >> 1
    k2 = k - k1
    s1 = _bits_as_float(np.int32((k1 + 127) << 23))
    s2 = _bits_as_float(np.int32((k2 + 127) << 23))
    return p * s1 * s2


@_inline
def _exp_nonpos_64(x):
    x = _XMIN_64 if x < _XMIN_64 else x
    kf = (x * _LOG2E_64 + _ROUND_64) - _ROUND_64
    k = np.int64(kf)
    r = (x - kf * _LN2HI_64) - kf * _LN2LO_64
    p = _E64[13]
    p = p * r + _E64[12]
    p = p * r + _E64[11]
    p = p * r + _E64[10]
    p = p * r + _E64[9]
    p = p * r + _E64[8]
    p = p * r + _E64[7]
    p = p * r + _E64[6]
    p = p * r + _E64[5]
    p = p * r + _E64[4]
    p = p * r + _E64[3]
    p = p * r + _E64[2]
    p = p * r + _E64[1]
    p = p * r + _E64[0]
    k1 = k >> 1
    k2 = k - k1
    s1 = _bits_as_float(np.int64((k1 + 1023) << 52))
    s2 = _bits_as_float(np.int64((k2 + 1023) << 52))
    return p * s1 * s2


@_inline
def _log1p_unit_32(e):
    # log(1 + e) = 2 atanh(s), s = e / (2 + e) in [0, 1/3] for e in [0, 1]: no range
    # reduction needed, and relative accuracy holds down to tiny e.
    s = e / (_F32(2.0) + e)
    s2 = s * s
    p = _A32[7]
    p = p * s2 + _A32[6]
    p = p * s2 + _A32[5]
    p = p * s2 + _A32[4]
    p = p * s2 + _A32[3]
    p = p * s2 + _A32[2]
    p = p * s2 + _A32[1]
    p = p * s2 + _A32[0]
    return _F32(2.0) * s * p


@_inline
def _log1p_unit_64(e):
    s = e / (2.0 + e)
    s2 = s * s
    p = _A64[16]
    p = p * s2 + _A64[15]
    p = p * s2 + _A64[14]
    p = p * s2 + _A64[13]
    p = p * s2 + _A64[12]
    p = p * s2 + _A64[11]
    p = p * s2 + _A64[10]
    p = p * s2 + _A64[9]
    p = p * s2 + _A64[8]
    p = p * s2 + _A64[7]
    p = p * s2 + _A64[6]
    p = p * s2 + _A64[5]
    p = p * s2 + _A64[4]
    p = p * s2 + _A64[3]
    p = p * s2 + _A64[2]
    p = p * s2 + _A64[1]
    p = p * s2 + _A64[0]
    return 2.0 * s * p


def exp_nonpos(x):
    """``exp(x)`` for ``x <= 0`` in the dtype of ``x`` (Numba only; dispatches on the type)."""
    raise NotImplementedError("called from Numba-compiled code only")


def log1p_unit(e):
    """``log(1 + e)`` for ``0 <= e <= 1`` in the dtype of ``e`` (Numba only)."""
    raise NotImplementedError("called from Numba-compiled code only")


@overload(exp_nonpos)
def _exp_nonpos_typed(x):
    if x == types.float32:
        return lambda x: _exp_nonpos_32(x)
    if x == types.float64:
        return lambda x: _exp_nonpos_64(x)
    return None


@overload(log1p_unit)
def _log1p_unit_typed(e):
    if e == types.float32:
        return lambda e: _log1p_unit_32(e)
    if e == types.float64:
        return lambda e: _log1p_unit_64(e)
    return None

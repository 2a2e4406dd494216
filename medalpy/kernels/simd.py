"""Eight float32 lanes as a Numba value: explicit SIMD for the cpu backend's hand-tiled kernels.

Numba compiles loops to LLVM, which vectorises simple element-wise loops by itself but not a
register-tiled product (a tile of accumulators updated across an inner loop): written with
scalars it stays scalar. :data:`f32x8` is LLVM's ``<8 x float>`` given a Numba type, so a
kernel can hold a tile of accumulators in vector registers and say exactly which loads and
multiply-adds it does. LLVM picks the instructions for the machine Numba
compiles for: one 256-bit AVX register per value on x86-64 with AVX2 (two 128-bit halves
without AVX), fused multiply-adds where the CPU has them.

The operations, just those the kernels use (all take and give :data:`f32x8` unless said):

    load(a, i)          a[i:i+8] of a float32 array's data, ``i`` a flat element offset
    zeros()             eight 0.0
    muladd(a, b, c)     a * b + c, fused into one rounding where the CPU has FMA
    hsum(v)             the float32 sum of the eight lanes: (v0 + v4) + (v2 + v6) and
                        (v1 + v5) + (v3 + v7), then the two added

``load`` does no bounds check and ignores strides: it reads eight consecutive floats from the
array's first element on, so kernels give it rows (1-D contiguous views), and their loop
bounds are the check (every kernel using it is tested against the reference on shapes that
end in every remainder).

Numba's on-disk cache (``cache=True``) of a kernel using these is keyed on the kernel's own
source file: after changing this module, delete ``medalpy/kernels/__pycache__``.
"""

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, models, register_model

#: Lanes per vector.
WIDTH = 8

_FLOAT = ir.FloatType()
_VEC = ir.VectorType(_FLOAT, WIDTH)
_I32 = ir.IntType(32)


class F32x8(types.Type):
    """The Numba type of eight float32 lanes."""

    def __init__(self):
        super().__init__(name="f32x8")


f32x8 = F32x8()


@register_model(F32x8)
class _F32x8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VEC)


def _address(context, builder, array_type, array, offset):
    data = cgutils.create_struct_proxy(array_type)(context, builder, value=array).data
    return builder.bitcast(builder.gep(data, [offset]), _VEC.as_pointer())


def _float32_array(a):
    return isinstance(a, types.Array) and a.dtype == types.float32


@intrinsic
def load(typingctx, a, i):
    if not (_float32_array(a) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        offset = context.cast(builder, args[1], sig.args[1], types.intp)
        return builder.load(_address(context, builder, sig.args[0], args[0], offset), align=4)

    return f32x8(a, i), codegen


@intrinsic
def zeros(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_VEC, [0.0] * WIDTH)

    return f32x8(), codegen


@intrinsic
def muladd(typingctx, a, b, c):
    if not a == b == c == f32x8:
        return None

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_VEC, [_VEC, _VEC, _VEC]), "llvm.fmuladd.v8f32")
        return builder.call(fn, args)

    return f32x8(a, b, c), codegen


@intrinsic
def hsum(typingctx, v):
    if v != f32x8:
        return None

    def codegen(context, builder, sig, args):
        # Halve the vector three times: lanes i and i + 4, then i and i + 2, then 0 and 1.
        x = args[0]
        width = WIDTH
        while width > 1:
            width //= 2
            low = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(_I32, width),
                                                           list(range(width))))
            high = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(_I32, width),
                                                            list(range(width, 2 * width))))
            x = builder.fadd(low, high)
        return builder.extract_element(x, ir.Constant(_I32, 0))

    return types.float32(v), codegen


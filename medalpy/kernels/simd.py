"""Float32 vectors as Numba values: explicit SIMD for the cpu backend's hand-tiled kernels.

Numba compiles loops to LLVM, which vectorises simple element-wise loops by itself but not a
register-tiled product (a tile of accumulators updated across an inner loop): written with
scalars it stays scalar. :data:`f32x8` and :data:`f32x16` are LLVM's ``<8 x float>`` and
``<16 x float>`` given Numba types, so a kernel can hold a tile of accumulators in vector
registers and say exactly which loads and multiply-adds it does. LLVM picks the instructions
for the machine Numba compiles for: an ``f32x8`` is one 256-bit AVX register on x86-64 with
AVX2, an ``f32x16`` one 512-bit register with AVX-512 (two 256-bit ones without it: correct,
but twice the registers), fused multiply-adds where the CPU has them.

The operations, just those the kernels use:

    load(a, i)          f32x8: a[i:i+8] of a float32 array's data, ``i`` a flat element offset
    load16(a, i)        f32x16: a[i:i+16], likewise
    broadcast16(a, i)   f32x16: a[i] in all sixteen lanes
    store(a, i, v)      a[i:i+w] = v, for a vector v of w lanes
    zeros(), zeros16()  eight, sixteen 0.0
    muladd(a, b, c)     a * b + c lane by lane (vectors of one width), fused into one
                        rounding where the CPU has FMA
    add, sub, mul(a, b) a + b, a - b, a * b lane by lane, each rounded (never fused)
    hsum(v)             f32x8 -> float32, the sum of the eight lanes: (v0 + v4) + (v2 + v6)
                        and (v1 + v5) + (v3 + v7), then the two added
    prefetch(a, i)      a hint to bring the cache line holding a[i] into L1 ahead of a
                        read; no effect on results, and never a fault, even past the end

Loads, stores and broadcasts do no bounds check and ignore strides: they address the array's
data as one flat run from its first element, so the element (r, c) of a row-major 2-D array
with a row stride of ``ld`` elements is at ``r * ld + c``, and the kernels' loop bounds are
the check (every kernel using them is tested against the reference on shapes that end in
every remainder).

Numba's on-disk cache (``cache=True``) of a kernel using these is keyed on the kernel's own
source file: after changing this module, delete ``medalpy/kernels/__pycache__``.
"""

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, models, register_model

#: Lanes of an :data:`f32x8`.
WIDTH = 8
#: Lanes of an :data:`f32x16`.
WIDE = 16

_FLOAT = ir.FloatType()
_I32 = ir.IntType(32)


class F32Vector(types.Type):
    """The Numba type of ``width`` float32 lanes."""

    def __init__(self, width):
        self.width = width
        super().__init__(name=f"f32x{width}")


f32x8, f32x16 = F32Vector(WIDTH), F32Vector(WIDE)


@register_model(F32Vector)
class _F32VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(_FLOAT, fe_type.width))


def _element(context, builder, array_type, array, offset, index_type):
    """Pointer to the float at flat ``offset`` from the array's first element."""
    data = cgutils.create_struct_proxy(array_type)(context, builder, value=array).data
    return builder.gep(data, [context.cast(builder, offset, index_type, types.intp)])


def _float32_array(a):
    return isinstance(a, types.Array) and a.dtype == types.float32


def _loader(vector):
    def typer(typingctx, a, i):
        if not (_float32_array(a) and isinstance(i, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            pointer = _element(context, builder, sig.args[0], args[0], args[1], sig.args[1])
            lanes = ir.VectorType(_FLOAT, vector.width)
            return builder.load(builder.bitcast(pointer, lanes.as_pointer()), align=4)

        return vector(a, i), codegen

    return intrinsic(typer)


load, load16 = _loader(f32x8), _loader(f32x16)


@intrinsic
def broadcast16(typingctx, a, i):
    if not (_float32_array(a) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        pointer = _element(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        value = builder.load(pointer, align=4)
        lanes = ir.VectorType(_FLOAT, WIDE)
        one = builder.insert_element(ir.Constant(lanes, ir.Undefined), value, ir.Constant(_I32, 0))
        return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(_I32, WIDE), [0] * WIDE))

    return f32x16(a, i), codegen


@intrinsic
def store(typingctx, a, i, v):
    if not (_float32_array(a) and isinstance(i, types.Integer) and isinstance(v, F32Vector)):
        return None

    def codegen(context, builder, sig, args):
        pointer = _element(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        lanes = ir.VectorType(_FLOAT, sig.args[2].width)
        builder.store(args[2], builder.bitcast(pointer, lanes.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.none(a, i, v), codegen


def _zeros(vector):
    def typer(typingctx):
        def codegen(context, builder, sig, args):
            return ir.Constant(ir.VectorType(_FLOAT, vector.width), [0.0] * vector.width)

        return vector(), codegen

    return intrinsic(typer)


zeros, zeros16 = _zeros(f32x8), _zeros(f32x16)


@intrinsic
def muladd(typingctx, a, b, c):
    if not (isinstance(a, F32Vector) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        lanes = ir.VectorType(_FLOAT, sig.args[0].width)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(lanes, [lanes, lanes, lanes]),
            f"llvm.fmuladd.v{sig.args[0].width}f32")
        return builder.call(fn, args)

    return a(a, b, c), codegen


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


@intrinsic
def prefetch(typingctx, a, i):
    if not (_float32_array(a) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        pointer = _element(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [pointer.type, _I32, _I32, _I32]),
            "llvm.prefetch.p0")
        # read (0), keep in all levels (locality 3: prefetcht0 on x86), data cache (1)
        builder.call(fn, [pointer, ir.Constant(_I32, 0), ir.Constant(_I32, 3),
                          ir.Constant(_I32, 1)])
        return context.get_dummy_value()

    return types.none(a, i), codegen


def _lanewise(name, instruction):
    def typer(typingctx, a, b):
        if not (isinstance(a, F32Vector) and a == b):
            return None

        def codegen(context, builder, sig, args):
            return getattr(builder, instruction)(args[0], args[1])

        return a(a, b), codegen

    typer.__name__ = name
    return intrinsic(typer)


add, sub, mul = _lanewise("add", "fadd"), _lanewise("sub", "fsub"), _lanewise("mul", "fmul")

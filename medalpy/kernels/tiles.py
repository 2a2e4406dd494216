"""Register-tiled float32 products for AVX-512 cores: the larger-batch products of a step.

With a batch of a few dozen rows and more, a step's products are (batch, 784-1000) by
(784-1000, 784-1000), shapes at which OpenBLAS, one call per lane on a block of columns,
stays well below its large-GEMM rate (docs/performance.md). These kernels do the same
products with one tile of the output held in registers:

    TILE_ROWS x PANEL = 8 x 48 outputs in 24 sixteen-lane accumulators (f32x16, one AVX-512
    register each). Each step k of the inner loop loads one row of a *panel* (48 floats) as
    three vectors, broadcasts 8 elements of the left operand, and does 24 fused
    multiply-adds.

A panel is 48 columns of the right operand copied row after row into a contiguous buffer
(zeros beyond the operand's last column): the inner loop then reads it sequentially, where
the operand's own rows are thousands of floats apart. A last panel of 32 or 16 columns and
fewer is computed with 16 or 8 accumulators (a batch of 128 rows is two panels and a
32-column one). The loop prefetches its panel :data:`PREFETCH_ROWS` rows ahead into L1. The
left operand is read through a row stride and a step stride (``a[off + r a_rs + k a_ks]``
for tile row r), which lets one tile serve three products:

- ``matmul``: ``C = A B`` (the forward product). Panels of B, one at a time per lane; tiles
  down A's rows. With at most :data:`IN_PLACE_MAX_ROWS` rows of A, the tiles read B's
  columns in place; with more, the first tile of a panel reads them in place and packs
  them as it goes (a last, narrower panel is packed first).
- ``sgd_update_product``: ``G = A^T delta`` applied at once to the weights and velocities,
  as :func:`medalpy.kernels.cpu.sgd_update_product` does, G never stored in memory. The
  whole of ``delta`` is packed into panels first; tiles go down G's rows, 32 rows of
  weights at a time. From :data:`STEP_IN_TILE_MIN_ROWS` batch rows each tile's G goes
  through the SGD step from its registers, onto P and V lines it prefetched during its
  loop; with fewer, the 32 rows of G go through a scratch in cache and then the SGD step
  along whole rows of P and V. Each tile's 8 columns of A are copied first, k by k, into a
  contiguous strip (read in place, every step k would load a new row of A).
- ``matmul_nt``: ``C = delta W^T`` (the back-propagated error), as ``C^T = W delta^T``:
  panels of ``delta^T`` (48 batch rows each, transposed while packed), tiles down W's rows,
  each tile's result written transposed.

Round-off: every output element is one chain of fused multiply-adds over k in order, from
zero, in whichever tile computes it. Row tiles start every 8 rows, the last one moved up to
end at the last row (it recomputes a few rows of the tile before it, to the same bits, and
the update applies only its new rows; the forward's, read in place, has :data:`HALF_ROWS`
rows when the rows left fit in them), so results depend on the shapes alone, never on the
lanes or how the tiles are shared out. They differ from OpenBLAS's (another order of sums)
within the usual ``k eps |A||B|`` bound.

Used by :mod:`medalpy.kernels.lanes` for float32 products of
:data:`medalpy.config.TILED_MIN_ROWS` to ``TILED_MAX_ROWS`` batch rows when the CPU has AVX-512
(:func:`available`); elsewhere the products stay with OpenBLAS (with AVX2 the tile's 24
accumulators would take 48 of the 16 vector registers there are).
"""

import functools

import llvmlite.binding as llvm
import numba
import numpy as np

from medalpy.kernels import denormals
from medalpy.kernels.simd import (WIDE, add, broadcast16, load, load16, mul, muladd, prefetch,
                                  store, sub, zeros16)

#: Rows of a tile.
TILE_ROWS = 8
#: Rows of the forward's last row tile, read in place, when the batch's last rows fit in
#: it (batch 10 or 20: a tile of 8 moved up to end at the last row would compute 6 or 4 rows
#: twice; the tile of 4 does half the multiply-adds of one of 8 in 0.53-0.56 of its time:
#: docs/performance.md).
HALF_ROWS = 4
#: Columns of a panel (and of a tile): three f32x16 vectors.
PANEL = 3 * WIDE
#: How many panel rows ahead of the one it reads the tile's loop prefetches into L1: a
#: panel of a thousand rows comes from L2, and the hardware's own prefetch left the loop
#: waiting on it (docs/performance.md says how 4 was chosen).
PREFETCH_ROWS = 4
#: Most rows of A for which ``matmul`` reads B's columns in place instead of packing them
#: into panels: with a few row tiles per panel, packing (B's rows are thousands of floats
#: apart, fetched from L3 or memory) cost more than it saved; read in place, the loop
#: prefetches B's rows :data:`IN_PLACE_PREFETCH_ROWS` ahead instead (docs/performance.md).
IN_PLACE_MAX_ROWS = 32
IN_PLACE_PREFETCH_ROWS = 8
#: With more rows, the first tile of each panel reads B's columns in place and stores them
#: into the panel as it goes, for the panel's other tiles (a separate packing pass read B
#: once more), prefetching :data:`PACKING_PREFETCH_ROWS` rows ahead: B comes from L3 or
#: memory there.
PACKING_PREFETCH_ROWS = 16
#: Row tiles of the weights whose gradient the update forms together, panel by panel of
#: delta, so that each panel read from L2 serves 32 rows (docs/performance.md says how 4
#: was chosen).
UPDATE_TILES = 4
#: From this many batch rows the update applies the SGD step to each tile of G as soon as
#: the tile's loop ends, from its registers, having prefetched the tile's rows of P and V
#: during the loop; with fewer, the loop is too short to hide those fetches and G goes
#: through a scratch to a pass along whole rows (docs/performance.md).
STEP_IN_TILE_MIN_ROWS = 32

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
_parallel = numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)


@functools.cache  # asking LLVM for the host's features takes a fraction of a millisecond
def available():
    """True when Numba compiles for a CPU with AVX-512 (the host, unless ``NUMBA_CPU_NAME``
    names another)."""
    if numba.config.CPU_NAME not in (None, "host"):
        return "+avx512f" in (numba.config.CPU_FEATURES or "")
    return bool(llvm.get_host_cpu_features().get("avx512f", False))


@numba.njit(inline="always", error_model="numpy")
def _row(x, b0, b1, b2, c0, c1, c2, vectors):
    # One row of the tile: c_v += x * b_v for the first ``vectors`` of the three.
    c0 = muladd(x, b0, c0)
    if vectors > 1:
        c1 = muladd(x, b1, c1)
    if vectors > 2:
        c2 = muladd(x, b2, c2)
    return c0, c1, c2


@numba.njit(inline="always", error_model="numpy")
def _store_row(c, o, c0, c1, c2):
    # One row of the tile: c[o:o + 48] = the three vectors.
    store(c, o, c0), store(c, o + WIDE, c1), store(c, o + 2 * WIDE, c2)


@numba.njit(inline="always", error_model="numpy")
def _zero_tile():
    # The tile's 24 accumulators (rows 0-7 x vectors 0-2, row by row), all 0.
    z = zeros16()
    return (z, z, z, z, z, z, z, z, z, z, z, z, z, z, z, z, z, z, z, z, z, z, z, z)


@numba.njit(inline="always", error_model="numpy")
def _tile_step(a, q, a_rs, b0, b1, b2, t, vectors, rows=TILE_ROWS):
    # One step k of a tile's loop: accumulator row r += a[q + r a_rs] * (b0, b1, b2), for the
    # first ``rows`` rows (8 or HALF_ROWS, a constant where this is inlined).
    (c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31, c32, c40, c41, c42, c50, c51, c52,
     c60, c61, c62, c70, c71, c72) = t
    c00, c01, c02 = _row(broadcast16(a, q), b0, b1, b2, c00, c01, c02, vectors)
    c10, c11, c12 = _row(broadcast16(a, q + a_rs), b0, b1, b2, c10, c11, c12, vectors)
    c20, c21, c22 = _row(broadcast16(a, q + 2 * a_rs), b0, b1, b2, c20, c21, c22, vectors)
    c30, c31, c32 = _row(broadcast16(a, q + 3 * a_rs), b0, b1, b2, c30, c31, c32, vectors)
    if rows > HALF_ROWS:
        c40, c41, c42 = _row(broadcast16(a, q + 4 * a_rs), b0, b1, b2, c40, c41, c42, vectors)
        c50, c51, c52 = _row(broadcast16(a, q + 5 * a_rs), b0, b1, b2, c50, c51, c52, vectors)
        c60, c61, c62 = _row(broadcast16(a, q + 6 * a_rs), b0, b1, b2, c60, c61, c62, vectors)
        c70, c71, c72 = _row(broadcast16(a, q + 7 * a_rs), b0, b1, b2, c70, c71, c72, vectors)
    return (c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31, c32, c40, c41, c42, c50, c51,
            c52, c60, c61, c62, c70, c71, c72)


@numba.njit(inline="always", error_model="numpy")
def _tile_of(a, a_off, a_rs, a_ks, b, b_off, ldb, ahead, K, c, c_off, ldc, vectors,
             pack=None, rows=TILE_ROWS):
    # c[c_off + r ldc + q] = sum over k < K of a[a_off + r a_rs + k a_ks] * b[b_off + k ldb + q]
    # for r < ``rows``, q < 16 vectors (the other columns of the tile are stored as 0): up
    # to 24 accumulators, written once at the end. ``vectors`` and ``rows`` are constants
    # where this is inlined (_tile; the packing tile and the half tile of _matmul_panels), so
    # the unused accumulators and their multiply-adds compile away.
    # Each step prefetches the four cache lines that may hold b's row ``ahead`` elements on
    # (past b's end near the last k: harmless). With ``pack``, each row of b read is also
    # stored into that panel.
    t = _zero_tile()
    for k in range(K):
        p = b_off + k * ldb
        f = p + ahead
        prefetch(b, f), prefetch(b, f + WIDE), prefetch(b, f + 2 * WIDE)
        prefetch(b, f + PANEL - 1)
        b0, b1, b2 = load16(b, p), load16(b, p + WIDE), load16(b, p + 2 * WIDE)
        if pack is not None:
            d = k * PANEL
            store(pack, d, b0), store(pack, d + WIDE, b1), store(pack, d + 2 * WIDE, b2)
        t = _tile_step(a, a_off + k * a_ks, a_rs, b0, b1, b2, t, vectors, rows)
    (c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31, c32, c40, c41, c42, c50, c51, c52,
     c60, c61, c62, c70, c71, c72) = t
    _store_tile(c, c_off, ldc, c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31, c32,
                c40, c41, c42, c50, c51, c52, c60, c61, c62, c70, c71, c72, rows)


@numba.njit(inline="always", error_model="numpy")
def _store_tile(c, o, ldc, c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31, c32, c40,
                c41, c42, c50, c51, c52, c60, c61, c62, c70, c71, c72, rows=TILE_ROWS):
    # The tile's first ``rows`` rows to c[o + r ldc:][:48].
    _store_row(c, o, c00, c01, c02)
    _store_row(c, o + ldc, c10, c11, c12)
    _store_row(c, o + 2 * ldc, c20, c21, c22)
    _store_row(c, o + 3 * ldc, c30, c31, c32)
    if rows > HALF_ROWS:
        _store_row(c, o + 4 * ldc, c40, c41, c42)
        _store_row(c, o + 5 * ldc, c50, c51, c52)
        _store_row(c, o + 6 * ldc, c60, c61, c62)
        _store_row(c, o + 7 * ldc, c70, c71, c72)


@numba.njit(inline="always", error_model="numpy")
def _step16(P, V, o, g, coef):
    # V = momentum V + lr (scale G + decay P), P = P - V on P[o:o+16] and V[o:o+16] (flat),
    # G in g's lanes, (lr, momentum, decay, scale) = coef[0:4]: cpu._sgd_kernel's operations
    # in its order, so the same bits. The coefficients are broadcast from memory at each
    # use: held in registers, LLVM kept them live across the tile's loop, which spilled
    # its accumulators.
    p = load16(P, o)
    v = add(mul(broadcast16(coef, 1), load16(V, o)),
            mul(broadcast16(coef, 0), add(mul(broadcast16(coef, 3), g),
                                          mul(broadcast16(coef, 2), p))))
    store(V, o, v), store(P, o, sub(p, v))


@numba.njit(inline="always", error_model="numpy")
def _step_row(P, V, o, g0, g1, g2, coef, vectors):
    # _step16 on the first ``vectors`` vectors of a tile's row.
    _step16(P, V, o, g0, coef)
    if vectors > 1:
        _step16(P, V, o + WIDE, g1, coef)
    if vectors > 2:
        _step16(P, V, o + 2 * WIDE, g2, coef)


@_jit
def _step_edge(P, V, o, ldp, skip, width, g, coef):
    # The SGD step of _step16 for rows ``skip`` to 7 and ``width`` columns of a tile held in
    # g (rows PANEL apart): a narrow last panel, or a last row tile moved up over rows the
    # tile before it has updated.
    lr, momentum, decay, scale = coef[0], coef[1], coef[2], coef[3]
    for r in range(skip, TILE_ROWS):
        for q in range(width):
            x = o + r * ldp + q
            v = momentum * V[x] + lr * (scale * g[r * PANEL + q] + decay * P[x])
            V[x] = v
            P[x] = P[x] - v


@numba.njit(inline="always", error_model="numpy")
def _update_tile(a, a_off, panel, K, P, V, o, ldp, skip, width, edge, coef, vectors):
    # The tile of G = a-strip x panel (_tile_step on a strip of 8 columns of A and a packed
    # panel of delta) put straight through the SGD step (_step16) on P and V (flat) from o,
    # for rows ``skip`` to 7 and ``width`` columns (else through ``edge``). Each step of the
    # loop also prefetches one line of P and one of V of the tile's 8 rows x 4 lines, spread
    # evenly over the loop, so that they are in L1 when it ends. Its own loop, not
    # _tile_of's with a flag: written that way, LLVM spilled the accumulators to the stack
    # between the loop and the SGD step (5% slower updates; docs/performance.md).
    t = _zero_tile()
    ahead = PREFETCH_ROWS * PANEL
    spread = ((4 * TILE_ROWS) << 16) // K  # lines of P (and of V) per step, in 1/65536ths
    for k in range(K):
        p = k * PANEL
        f = p + ahead
        prefetch(panel, f), prefetch(panel, f + WIDE), prefetch(panel, f + 2 * WIDE)
        line = min((k * spread) >> 16, 4 * TILE_ROWS - 1)
        x = o + (line >> 2) * ldp + min((line & 3) * WIDE, PANEL - 1)
        prefetch(P, x), prefetch(V, x)
        b0, b1, b2 = load16(panel, p), load16(panel, p + WIDE), load16(panel, p + 2 * WIDE)
        t = _tile_step(a, a_off + k * TILE_ROWS, 1, b0, b1, b2, t, vectors)
    (c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31, c32, c40, c41, c42, c50, c51, c52,
     c60, c61, c62, c70, c71, c72) = t
    if skip == 0 and width == vectors * WIDE:
        _step_row(P, V, o, c00, c01, c02, coef, vectors)
        _step_row(P, V, o + ldp, c10, c11, c12, coef, vectors)
        _step_row(P, V, o + 2 * ldp, c20, c21, c22, coef, vectors)
        _step_row(P, V, o + 3 * ldp, c30, c31, c32, coef, vectors)
        _step_row(P, V, o + 4 * ldp, c40, c41, c42, coef, vectors)
        _step_row(P, V, o + 5 * ldp, c50, c51, c52, coef, vectors)
        _step_row(P, V, o + 6 * ldp, c60, c61, c62, coef, vectors)
        _step_row(P, V, o + 7 * ldp, c70, c71, c72, coef, vectors)
    else:
        _store_tile(edge, 0, PANEL, c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31,
                    c32, c40, c41, c42, c50, c51, c52, c60, c61, c62, c70, c71, c72)
        _step_edge(P, V, o, ldp, skip, width, edge, coef)


@numba.njit(inline="always", error_model="numpy")
def _tile(a, a_off, a_rs, a_ks, panel, K, c, c_off, ldc, columns=PANEL, b_off=0, ldb=PANEL,
          ahead=PREFETCH_ROWS * PANEL):
    # The tile for the first ``columns`` columns of the panel, in as few vectors as hold
    # them: one copy of the loop per vector count, each with its count a constant. A packed
    # panel by default; B's own columns with ``b_off``, ``ldb``, ``ahead`` given.
    if columns > 2 * WIDE:
        _tile_of(a, a_off, a_rs, a_ks, panel, b_off, ldb, ahead, K, c, c_off, ldc, 3)
    elif columns > WIDE:
        _tile_of(a, a_off, a_rs, a_ks, panel, b_off, ldb, ahead, K, c, c_off, ldc, 2)
    else:
        _tile_of(a, a_off, a_rs, a_ks, panel, b_off, ldb, ahead, K, c, c_off, ldc, 1)


@_jit
def _pack(B, j, panel):
    # panel[k PANEL + q] = B[k, j + q] for every row k of B, q < PANEL (0 past B's columns).
    K, N = B.shape
    ld = B.strides[0] // B.itemsize
    width = min(PANEL, N - j)
    if width == PANEL:
        for k in range(K):
            s, d = k * ld + j, k * PANEL
            store(panel, d, load16(B, s))
            store(panel, d + WIDE, load16(B, s + WIDE))
            store(panel, d + 2 * WIDE, load16(B, s + 2 * WIDE))
    else:
        for k in range(K):
            for q in range(PANEL):
                panel[k * PANEL + q] = B[k, j + q] if q < width else np.float32(0.0)


@_jit
def _pack_transposed(D, i, panel):
    # panel[k PANEL + q] = D[i + q, k] for every column k of D, q < PANEL (0 past D's rows).
    # In blocks of 64 columns of D, so that the block's rows of the panel stay in L1.
    M, K = D.shape
    rows = min(PANEL, M - i)
    for k0 in range(0, K, 64):
        k1 = min(k0 + 64, K)
        for q in range(PANEL):
            if q < rows:
                row = D[i + q]
                for k in range(k0, k1):
                    panel[k * PANEL + q] = row[k]
            else:
                for k in range(k0, k1):
                    panel[k * PANEL + q] = np.float32(0.0)


@numba.njit(inline="always")
def panels(n):
    """Panels that cover ``n`` columns."""
    return (n + PANEL - 1) // PANEL


@numba.njit(inline="always")
def row_tiles(n):
    """Row tiles that cover ``n`` rows (``n >= TILE_ROWS``)."""
    return (n + TILE_ROWS - 1) // TILE_ROWS


# -- C = A B -----------------------------------------------------------------------------


@_jit
def _matmul_panels(A, B, C, panel, edge, first, stop):
    # Tiles ``first`` to ``stop - 1`` of C = A B, numbered panel by panel (tile t of panel p
    # is p * row_tiles(M) + t), so that lanes share out tiles evenly, not panels. The last
    # row tile ends at the last row; in place, with HALF_ROWS rows when the rows left fit.
    M, K = A.shape
    N = C.shape[1]
    size = A.itemsize
    lda, ldb, ldc = A.strides[0] // size, B.strides[0] // size, C.strides[0] // size
    T = row_tiles(M)
    packed = -1
    for w in range(first, stop):
        p, t = w // T, w % T
        j = p * PANEL
        width = min(PANEL, N - j)
        i = min(t * TILE_ROWS, M - TILE_ROWS)
        if width == PANEL and M <= IN_PLACE_MAX_ROWS:  # same sums, read from B itself
            if M - t * TILE_ROWS <= HALF_ROWS:
                i = M - HALF_ROWS
                _tile_of(A, i * lda, lda, 1, B, j, ldb, IN_PLACE_PREFETCH_ROWS * ldb, K, C,
                         i * ldc + j, ldc, 3, None, HALF_ROWS)
            else:
                _tile(A, i * lda, lda, 1, B, K, C, i * ldc + j, ldc, PANEL, j, ldb,
                      IN_PLACE_PREFETCH_ROWS * ldb)
            continue
        if p != packed and width == PANEL:  # the first tile packs the panel as it goes
            _tile_of(A, i * lda, lda, 1, B, j, ldb, PACKING_PREFETCH_ROWS * ldb, K, C,
                     i * ldc + j, ldc, 3, panel)
            packed = p
            continue
        if p != packed:
            _pack(B, j, panel)
            packed = p
        if width == PANEL:
            _tile(A, i * lda, lda, 1, panel, K, C, i * ldc + j, ldc)
        else:
            _tile(A, i * lda, lda, 1, panel, K, edge, 0, PANEL, width)
            for r in range(TILE_ROWS):
                for q in range(width):
                    C[i + r, j + q] = edge[r * PANEL + q]


@_parallel
def _matmul_lanes(A, B, C, scratch, lanes):
    n = panels(C.shape[1]) * row_tiles(A.shape[0])
    K = A.shape[1]
    for lane in numba.prange(lanes):
        before = denormals.flush()  # each lane's thread, as the session's (denormals.py)
        _matmul_panels(A, B, C, scratch[lane, :K * PANEL], scratch[lane, K * PANEL:],
                       lane * n // lanes, (lane + 1) * n // lanes)
        denormals.restore(before)


def matmul_scratch_size(K):
    """Floats of one lane's scratch for ``matmul`` with inner dimension ``K``."""
    return K * PANEL + TILE_ROWS * PANEL


def matmul(A, B, C, scratch, lanes):
    """``C = A @ B`` (float32, A (M, K) with M >= 8, B (K, N), C (M, N), rows contiguous) on
    ``lanes`` threads; ``scratch``: (lanes or more, :func:`matmul_scratch_size`) float32."""
    if lanes == 1:
        K = A.shape[1]
        _matmul_panels(A, B, C, scratch[0, :K * PANEL], scratch[0, K * PANEL:], 0,
                       panels(C.shape[1]) * row_tiles(A.shape[0]))
    else:
        _matmul_lanes(A, B, C, scratch, lanes)


# -- C = D W^T ---------------------------------------------------------------------------


@_jit
def _matmul_nt_panels(D, W, C, packed, edge, first, stop):
    # Rows first*TILE_ROWS.. of W (columns of C) against every panel of D^T in ``packed``.
    M, K = D.shape
    n = W.shape[0]
    ldw = W.strides[0] // W.itemsize
    for t in range(first, stop):
        i = min(t * TILE_ROWS, n - TILE_ROWS)
        for p in range(panels(M)):
            b = p * PANEL
            rows = min(PANEL, M - b)
            _tile(W, i * ldw, ldw, 1, packed[p], K, edge, 0, PANEL, rows)
            for q in range(rows):
                out = C[b + q]
                for r in range(TILE_ROWS):
                    out[i + r] = edge[r * PANEL + q]


@_parallel
def _pack_transposed_panels_lanes(D, packed):
    # A panel per thread: unlike the plain copy, the transposing one took long enough to
    # gain from it (one-off timing, 128 x 1000 delta: 0.06 against 0.08 ms).
    for p in numba.prange(packed.shape[0]):
        _pack_transposed(D, p * PANEL, packed[p])


@_parallel
def _matmul_nt_lanes(D, W, C, packed, edges, lanes):
    n = row_tiles(W.shape[0])
    for lane in numba.prange(lanes):
        before = denormals.flush()
        _matmul_nt_panels(D, W, C, packed, edges[lane], lane * n // lanes,
                          (lane + 1) * n // lanes)
        denormals.restore(before)


@_jit
def _pack_transposed_panels(D, packed):
    for p in range(packed.shape[0]):
        _pack_transposed(D, p * PANEL, packed[p])


def matmul_nt(D, W, C, packed, edges, lanes):
    """``C = D @ W.T`` (float32, D (M, K), W (N, K) with N >= 8, C (M, N)) on ``lanes``
    threads; ``packed``: (panels(M), K*PANEL) float32, ``edges``: (lanes or more,
    TILE_ROWS*PANEL) float32."""
    if lanes == 1:
        _pack_transposed_panels(D, packed)
        _matmul_nt_panels(D, W, C, packed, edges[0], 0, row_tiles(W.shape[0]))
    else:
        _pack_transposed_panels_lanes(D, packed)
        _matmul_nt_lanes(D, W, C, packed, edges, lanes)


# -- G = A^T delta, applied to P and V -----------------------------------------------------


@_jit
def _update_tiles(A, packed, P, V, lr, momentum, decay, scale, scratch, first, stop):
    # Row tiles ``first`` to ``stop - 1`` of P, UPDATE_TILES at a time: their rows of G
    # against each panel of delta in turn (a panel, read from L2, serves them all from L1),
    # each tile's G put through the SGD step of cpu._sgd_kernel at once (with at least
    # STEP_IN_TILE_MIN_ROWS batch rows), or else into ``g`` (UPDATE_TILES * 8 rows of
    # panels(m) * PANEL) and then along those rows of P and V. Either way rows an earlier
    # tile updated are left alone. In-tile, ``g`` holds only the edge tile (8 x PANEL) and
    # the step's four coefficients (lr, momentum, decay, scale). Each tile's 8 columns of A
    # are first copied k by k into ``at`` (8 K floats per tile): read in place, every k of
    # the tile's loop would load a new row of A, thousands of floats on, which cost the loop
    # about a tenth of its speed (docs/performance.md).
    K, n = A.shape
    m = P.shape[1]
    lda = A.strides[0] // A.itemsize
    ldg = panels(m) * PANEL
    g, at = scratch[:UPDATE_TILES * TILE_ROWS * ldg], scratch[UPDATE_TILES * TILE_ROWS * ldg:]
    t_ = P.dtype.type
    lr, momentum, decay, scale = t_(lr), t_(momentum), t_(decay), t_(scale)
    in_tile = K >= STEP_IN_TILE_MIN_ROWS
    edge, coef = g[:TILE_ROWS * PANEL], g[TILE_ROWS * PANEL:TILE_ROWS * PANEL + 4]
    coef[0], coef[1], coef[2], coef[3] = lr, momentum, decay, scale
    p_flat, v_flat = P.reshape(-1), V.reshape(-1)
    for group in range(first, stop, UPDATE_TILES):
        members = range(group, min(group + UPDATE_TILES, stop))
        for t in members:
            i, o = min(t * TILE_ROWS, n - TILE_ROWS), (t - group) * TILE_ROWS * K
            for k in range(K):
                store(at, o + k * TILE_ROWS, load(A, k * lda + i))
        for p in range(panels(m)):
            j = p * PANEL
            for t in members:
                a_off = (t - group) * TILE_ROWS * K
                if not in_tile:
                    _tile(at, a_off, 1, TILE_ROWS, packed[p], K, g,
                          (t - group) * TILE_ROWS * ldg + j, ldg, m - j)
                    continue
                i = min(t * TILE_ROWS, n - TILE_ROWS)
                width = min(PANEL, m - j)
                o, skip = i * m + j, t * TILE_ROWS - i
                if width > 2 * WIDE:
                    _update_tile(at, a_off, packed[p], K, p_flat, v_flat, o, m, skip, width,
                                 edge, coef, 3)
                elif width > WIDE:
                    _update_tile(at, a_off, packed[p], K, p_flat, v_flat, o, m, skip, width,
                                 edge, coef, 2)
                else:
                    _update_tile(at, a_off, packed[p], K, p_flat, v_flat, o, m, skip, width,
                                 edge, coef, 1)
        if in_tile:
            continue
        for t in members:
            i = min(t * TILE_ROWS, n - TILE_ROWS)
            for r in range(t * TILE_ROWS - i, TILE_ROWS):  # rows before: the previous tile's
                o = ((t - group) * TILE_ROWS + r) * ldg
                prow, vrow, grow = P[i + r], V[i + r], g[o:o + m]
                for q in range(m):
                    v = momentum * vrow[q] + lr * (scale * grow[q] + decay * prow[q])
                    vrow[q] = v
                    prow[q] = prow[q] - v


@_jit
def _pack_panels(B, packed):
    for p in range(packed.shape[0]):
        _pack(B, p * PANEL, packed[p])


@_parallel
def _update_lanes(A, packed, P, V, lr, momentum, decay, scale, g, lanes):
    n = row_tiles(P.shape[0])
    for lane in numba.prange(lanes):
        before = denormals.flush()
        _update_tiles(A, packed, P, V, lr, momentum, decay, scale, g[lane],
                      lane * n // lanes, (lane + 1) * n // lanes)
        denormals.restore(before)


def update_scratch_size(K, m):
    """Floats of one lane's scratch for ``sgd_update_product`` with ``K`` batch rows and
    ``m`` output columns: UPDATE_TILES row tiles of G (the first 8 x PANEL + 4 of which serve
    as the edge tile and coefficients when the step runs in the tiles), then their strips of
    A."""
    return UPDATE_TILES * TILE_ROWS * (panels(m) * PANEL + K)


def sgd_update_product(A, delta, P, V, lr, momentum, decay, scale, packed, g, lanes):
    """The SGD step of ``P``, ``V`` with ``G = A.T @ delta`` (float32; A (K, n) with n >= 8,
    delta (K, m), P and V (n, m) C-contiguous) on ``lanes`` threads; ``packed``:
    (panels(m), K*PANEL) float32, ``g``: (lanes or more, :func:`update_scratch_size` (K, m))
    float32."""
    args = (A, packed, P, V, float(lr), float(momentum), float(decay), float(scale))
    _pack_panels(delta, packed)  # serial: a copy of delta, a few microseconds
    if lanes == 1:
        _update_tiles(*args, g[0], 0, row_tiles(P.shape[0]))
    else:
        _update_lanes(*args, g, lanes)

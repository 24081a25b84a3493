"""Integer products for int8 generation: int16 inputs by int8 weight rows, summed exactly.

Batch-1 generation from int8 weights (``numrnn sample --weights int8``) computes each step's
products ``out[r] = scale[r] * (x @ W[r])`` with W's rows of int8 values and one float32
scale a row. Widening every weight to float32 (a sign extension, a conversion and a fused
multiply-add for 16 weights) ran at 23-25 G multiply-adds a second on one Zen 4 core. Here the
input vector is rounded once to int16 (``quantize``: one float32 scale, the largest element to
``input_limit(D)``), and the rows are multiplied in integers: 16-bit products added in pairs
into 32-bit sums (one ``vpdpwssd`` with AVX-512 VNNI, ``vpmaddwd`` and an add without it),
32-43 G multiply-adds a second on the same core (four rows at once, each row's 32-bit lanes
added in a tree at the end). The sums are exact, so they do not depend on the order or on how
the rows are split between threads; ``input_limit`` keeps every one of them inside int32.

The cost is the input's rounding: each element moves by at most half a step, (largest
element) / (2 * input_limit(D)), 1.5e-5 of the largest at D = 1,024, far below the weights'
own rounding (half of 1/127 of a row's largest weight). A recurrent state is rounded at a
fixed step instead (``quantize_state``: 1 / input_limit(D), every |element| of a state being at
most 1), so that each unit can be rounded by the thread that computed it, with no pass over the
whole vector for its largest element: half a step is 1.5e-5 at D = 512, 3e-5 at 1,024.
"""

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from numrnn import tunables
from numrnn.kernels import microkernel

# int16 lanes a step of ``dot4`` reads: one vector register of them.
LANES = microkernel.VECTOR_BYTES // 2
ROWS = 4  # rows a call of dot4 multiplies: four running sums, each read of x shared by four rows
INT8_MAX = 127
_INT32_MAX = 2**31 - 1

_JIT = tunables.jit_options(tunables.configure_numba())
_kernel = numba.njit(**_JIT)


def _shuffle_add(builder, x, y, low, high):
    # x[low] ++ y[low] + x[high] ++ y[high], lanes picked by index lists (y's offset by x's width)
    i32 = ir.IntType(32)
    width = x.type.count

    def pick(indices):
        lanes = list(indices[0]) + [width + i for i in indices[1]]
        return builder.shuffle_vector(
            x, y, ir.Constant(ir.VectorType(i32, len(lanes)), [ir.Constant(i32, i) for i in lanes])
        )

    return builder.add(pick(low), pick(high))


def _add_lanes(builder, vectors):
    # four (W) vectors -> one (4) vector of their lane sums, by halving in a tree (15 shuffles and
    # adds for W = 16, where adding each vector's lanes one by one took about 60)
    W = vectors[0].type.count
    half = W // 2
    first, second = range(half), range(half, W)
    # [a, b] -> [a_lo + a_hi | b_lo + b_hi], the same for [c, d]: W lanes, groups of W/2
    ab = _shuffle_add(builder, vectors[0], vectors[1], (first, first), (second, second))
    cd = _shuffle_add(builder, vectors[2], vectors[3], (first, first), (second, second))
    # each group's low half, and its high half, from both: W lanes, four groups of W/4
    g = half
    low = [k * g + i for k in range(2) for i in range(g // 2)]
    high = [k * g + g // 2 + i for k in range(2) for i in range(g // 2)]
    total = _shuffle_add(builder, ab, cd, (low, low), (high, high))
    g //= 2
    while g > 1:  # halve every group of the one vector
        low = [k * g + i for k in range(ROWS) for i in range(g // 2)]
        high = [k * g + g // 2 + i for k in range(ROWS) for i in range(g // 2)]
        total = _shuffle_add(builder, total, total, (low, []), (high, []))
        g //= 2
    return total


@intrinsic
def dot4(typingctx, x, W, o0, o1, o2, o3, n):
    """(s0, s1, s2, s3), int32: s_j = sum_{d < n} x[d] * W.flat[o_j + d], for x an int16 array
    and W an int8 array, n a multiple of LANES, o_j offsets in elements.

    Each step widens LANES int8 weights of each row to int16, multiplies them by the same
    LANES inputs into 32-bit products and adds neighbouring pairs into LANES / 2 running sums a
    row (LLVM selects vpmaddwd, or vpdpwssd where the CPU has VNNI); the lanes are added at
    the end. Integer sums: any order gives the same value."""
    if not (
        isinstance(x, types.Array)
        and isinstance(W, types.Array)
        and x.dtype == types.int16
        and W.dtype == types.int8
    ):
        return None
    sums = types.UniTuple(types.int32, ROWS)
    signature = sums(x, W, types.intp, types.intp, types.intp, types.intp, types.intp)

    def codegen(context, builder, sig, args):
        x_array, w_array, o0, o1, o2, o3, n = args
        i8, i16, i32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)
        intp = context.get_value_type(types.intp)
        inputs_type = ir.VectorType(i16, LANES)
        weights_type = ir.VectorType(i8, LANES)
        products_type = ir.VectorType(i32, LANES)
        pair_type = ir.VectorType(i32, LANES // 2)
        x_ptr = context.make_array(sig.args[0])(context, builder, x_array).data
        w_ptr = context.make_array(sig.args[1])(context, builder, w_array).data
        even = ir.Constant(pair_type, [ir.Constant(i32, 2 * i) for i in range(LANES // 2)])
        odd = ir.Constant(pair_type, [ir.Constant(i32, 2 * i + 1) for i in range(LANES // 2)])
        zero = ir.Constant(pair_type, [ir.Constant(i32, 0)] * (LANES // 2))
        accumulators = [cgutils.alloca_once_value(builder, zero) for _ in range(ROWS)]
        row_ptrs = [builder.gep(w_ptr, [offset]) for offset in (o0, o1, o2, o3)]
        steps = builder.udiv(n, ir.Constant(intp, LANES))
        with cgutils.for_range(builder, steps) as loop:
            d = builder.mul(loop.index, ir.Constant(intp, LANES))
            inputs = builder.load(builder.bitcast(builder.gep(x_ptr, [d]), inputs_type.as_pointer()), align=2)
            wide_inputs = builder.sext(inputs, products_type)
            for row_ptr, accumulator in zip(row_ptrs, accumulators):
                address = builder.bitcast(builder.gep(row_ptr, [d]), weights_type.as_pointer())
                weights = builder.sext(builder.load(address, align=1), products_type)
                products = builder.mul(wide_inputs, weights, flags=["nsw"])
                pairs = builder.add(
                    builder.shuffle_vector(products, products, even),
                    builder.shuffle_vector(products, products, odd),
                    flags=["nsw"],
                )
                builder.store(builder.add(builder.load(accumulator), pairs, flags=["nsw"]), accumulator)
        sums_vector = _add_lanes(builder, [builder.load(a) for a in accumulators])
        totals = [builder.extract_element(sums_vector, ir.Constant(i32, j)) for j in range(ROWS)]
        return context.make_tuple(builder, sig.return_type, totals)

    return signature, codegen


@_kernel
def input_limit(D):
    # the largest |value| an input of D elements is rounded to: |sum| <= D * 127 * limit must
    # fit int32 (32,767 up to D = 516, 16,513 at 1,024, 8,256 at 2,048)
    return min(32767, _INT32_MAX // (INT8_MAX * max(D, 1)))


@_kernel
def quantize(xq, x):
    # xq (D) int16 out = x / scale rounded to the nearest (ties to even); returns scale, the
    # float32 step: the largest |x| / input_limit(D) (0 for a zero vector, whose xq is 0)
    largest = np.float32(0.0)
    for d in range(x.shape[0]):
        largest = max(largest, abs(x[d]))
    if largest == 0:
        xq[:] = 0
        return np.float32(0.0)
    scale = largest / np.float32(input_limit(x.shape[0]))
    inverse = np.float32(1.0) / scale
    for d in range(x.shape[0]):
        xq[d] = np.int16(np.rint(x[d] * inverse))
    return scale


@_kernel
def state_step(D):
    # the fixed step of a recurrent state in a product of D inputs: every |element| of a state
    # is at most 1 (a tanh, or a gate in 0..1 times one), so 1 / input_limit(D) needs no search
    # for the largest, and each unit can be rounded alone, by the thread that computed it
    return np.float32(1.0) / np.float32(input_limit(D))


@_kernel
def quantize_state(xq, x, j0, j1):
    # xq[j0:j1] (int16) out = x[j0:j1] / state_step(D) rounded to the nearest (ties to even),
    # D = x's length, clamped to +-input_limit(D) (a state's 1 may round a hair above it)
    limit = np.float32(input_limit(x.shape[0]))
    xq_part = xq[j0:j1]  # zero-based views: no check for negative indices in the loop
    x_part = x[j0:j1]
    for j in range(x_part.shape[0]):
        xq_part[j] = np.int16(min(max(np.rint(x_part[j] * limit), -limit), limit))


@_kernel
def rows(out, xq, x_scale, W, scale, r0, r1):
    # out[r] = scale[r] * x_scale * (xq @ W[r]) for the rows r0:r1, the product summed exactly
    # out (R) float32 out; xq (D) int16, x_scale its step (quantize); W (R, D) int8 rows
    # (contiguous); scale (R) float32
    D = xq.shape[0]
    body = D - D % LANES
    step = np.float32(x_scale)
    stride = W.strides[0] // W.itemsize
    for r in range(r0, r1, ROWS):
        last = min(r + ROWS, r1) - 1  # short of four rows: the last one again (not written)
        offsets = (r * stride, min(r + 1, last) * stride, min(r + 2, last) * stride, last * stride)
        sums = dot4(xq, W, offsets[0], offsets[1], offsets[2], offsets[3], body)
        for j in range(min(ROWS, r1 - r)):
            total = np.int64(sums[j])
            row = W[r + j]
            for d in range(body, D):
                total += np.int64(xq[d]) * np.int64(row[d])
            out[r + j] = scale[r + j] * step * np.float32(total)

"""Jobs that whichever thread reaches first does: a hand-off between threads without a lock,
and without a barrier that could wait for a thread that is not running.

A generation step on two threads is a chain of stages (each layer's parts, then the head),
each stage's jobs to be done before the next stage starts. Opening a numba parallel region for
every stage costs about 3 us (OpenMP, Zen 3), as much as a 2 x 512 layer's int8 products; a
region held open for a whole chunk of characters needs the threads to wait for each other
instead. Here a thread waits only for jobs some thread has already claimed and is running: a
job nobody has claimed yet it claims and does itself (``claim``). So the threads share the
work however the OS schedules them (one thread alone does all of it, a late one joins where
the others are), and nothing can wait forever.

``claims`` and ``done`` are int64 arrays, one element a job, holding the last step that
claimed or finished the job (-1 before the first). The loads and stores are atomic, ordered
acquire/release: what a job wrote is seen by a thread that saw it done.
"""

import sys

import numba
from llvmlite import binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from numrnn import tunables

_JIT = tunables.jit_options(tunables.configure_numba())
_kernel = numba.njit(**_JIT)
# x86's pause hint in a spin loop: the waiting thread gives its core's pipelines to its sibling
# and leaves the loop without a memory-order stall when the flag flips.
_X86 = llvm.get_process_triple().startswith(("x86_64", "i386", "i686"))
# Pauses a waiting thread spins before it starts giving its core away between looks (about 28 ns
# each on a Zen 3 core: 29 us, longer than a part of a C-sized layer takes). With another
# program busy on one of two cores, waiting threads that only spun sampled at 0.89x one thread
# (speed.py's under-load table, Zen 3); giving way, at 0.97-1.02x.
SPINS = 1024
_YIELDS = sys.platform != "win32"  # POSIX sched_yield; elsewhere the waiter only spins


def _is_counter_call(counters, job, step):
    # the arguments every function here takes: an int64 array of one counter a job, an index, a step
    return (
        isinstance(counters, types.Array)
        and counters.ndim == 1
        and counters.dtype == types.int64
        and isinstance(job, types.Integer)
        and isinstance(step, types.Integer)
    )


def _counter_and_step(context, builder, sig, args):
    # (a pointer to counters[job], step as int64) from a counter call's arguments
    counters, job, step = args
    job = context.cast(builder, job, sig.args[1], types.intp)
    array = context.make_array(sig.args[0])(context, builder, counters)
    pointer = cgutils.get_item_pointer(context, builder, sig.args[0], array, [job])
    return pointer, context.cast(builder, step, sig.args[2], types.int64)


@intrinsic
def claim(typingctx, claims, job, step):
    """Whether this thread takes job ``job`` of step ``step``: True for the one thread whose
    compare-and-swap moves claims[job] from step - 1 to step (each step claims every job
    once, in order)."""
    if not _is_counter_call(claims, job, step):
        return None

    def codegen(context, builder, sig, args):
        pointer, step_value = _counter_and_step(context, builder, sig, args)
        previous = builder.sub(step_value, ir.Constant(ir.IntType(64), 1))
        result = builder.cmpxchg(pointer, previous, step_value, "acq_rel", "acquire")
        return builder.extract_value(result, 1)

    return types.boolean(claims, job, step), codegen


@intrinsic
def finish(typingctx, done, job, step):
    """Mark job ``job`` of step ``step`` done (a release store: its writes come first)."""
    if not _is_counter_call(done, job, step):
        return None

    def codegen(context, builder, sig, args):
        pointer, step_value = _counter_and_step(context, builder, sig, args)
        builder.store_atomic(step_value, pointer, "release", 8)
        return context.get_dummy_value()

    return types.none(done, job, step), codegen


@intrinsic
def finished(typingctx, done, job, step):
    """Whether job ``job`` has finished step ``step`` (an acquire load: its writes are seen)."""
    if not _is_counter_call(done, job, step):
        return None

    def codegen(context, builder, sig, args):
        pointer, step_value = _counter_and_step(context, builder, sig, args)
        value = builder.load_atomic(pointer, "acquire", 8)
        return builder.icmp_signed(">=", value, step_value)

    return types.boolean(done, job, step), codegen


def _emit_pause(builder):
    if _X86:
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause"
        )
        builder.call(function, [])


@intrinsic
def pause(typingctx):
    """A spin loop's hint to the CPU (x86's pause; nothing elsewhere)."""

    def codegen(context, builder, sig, args):
        _emit_pause(builder)
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def give_way(typingctx):
    """Let another runnable thread have this core for now (POSIX sched_yield; a pause where
    there is none)."""

    def codegen(context, builder, sig, args):
        if _YIELDS:
            function = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield"
            )
            builder.call(function, [])
        else:
            _emit_pause(builder)
        return context.get_dummy_value()

    return types.none(), codegen


@_kernel
def wait_for(done, job, step):
    # until job ``job`` has finished step ``step`` (a thread has claimed it and is doing it):
    # spin SPINS pauses, then give the core away between looks
    spins = 0
    while not finished(done, job, step):
        if spins < SPINS:
            pause()
            spins += 1
        else:
            give_way()

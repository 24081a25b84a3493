"""numrnn.kernels.claims: jobs that whichever thread reaches first does, against what the
generation on two threads needs of them (each job done once a step, by one thread, its
writes seen by a thread that saw it done)."""

import numba
import numpy as np
import pytest

from numrnn.kernels import claims


@numba.njit
def _claim(taken, job, step):
    return claims.claim(taken, job, step)


@numba.njit
def _finish_and_check(done, job, step):
    before = claims.finished(done, job, step)
    claims.finish(done, job, step)
    claims.wait_for(done, job, step)  # returns at once: the job is done
    return before, claims.finished(done, job, step), claims.finished(done, job, step + 1)


def test_a_job_is_claimed_once_a_step_and_in_step_order():
    taken = np.full(3, -1, np.int64)
    assert _claim(taken, 1, 0)
    assert not _claim(taken, 1, 0)  # taken already
    assert not _claim(taken, 1, 2)  # step 1 comes first
    assert _claim(taken, 1, 1)
    assert _claim(taken, 0, 0) and _claim(taken, 2, 0)
    np.testing.assert_array_equal(taken, [0, 1, 0])


def test_a_finished_job_is_seen_finished_for_its_step_and_the_ones_before():
    done = np.full(2, -1, np.int64)
    assert _finish_and_check(done, 0, 0) == (False, True, False)
    assert _finish_and_check(done, 0, 1) == (False, True, False)
    np.testing.assert_array_equal(done, [1, -1])  # the other job untouched


@numba.njit(parallel=True)
def _run_stages(counts, order, taken, done, stages, jobs):
    # every thread walks the steps' stages, claiming jobs and waiting for each stage's jobs, as
    # the generation kernel does; a job's claimer counts it and stamps it with the stage's
    # sequence number, which it reads from the previous stage's jobs (so a job that ran before
    # the stage before it was done would see an old number)
    for thread in numba.prange(jobs):
        for step in range(counts.shape[0]):
            for stage in range(stages):
                for k in range(jobs):
                    job = stage * jobs + (thread + k) % jobs
                    if claims.claim(taken, job, step):
                        counts[step, job] += 1
                        previous = step * stages + stage - 1
                        seen = previous
                        if stage > 0:
                            for j in range(jobs):
                                seen = min(seen, order[step, (stage - 1) * jobs + j])
                        elif step > 0:
                            for j in range(jobs):
                                seen = min(seen, order[step - 1, (stages - 1) * jobs + j])
                        order[step, job] = seen + 1
                        claims.finish(done, job, step)
                for k in range(jobs):
                    claims.wait_for(done, stage * jobs + k, step)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("jobs", [2, 3])
def test_threads_claiming_jobs_do_each_once_a_step_after_the_stage_before(threads, jobs):
    steps, stages = 2000, 3
    counts = np.zeros((steps, stages * jobs), np.int64)
    order = np.full((steps, stages * jobs), -1, np.int64)
    taken = np.full(stages * jobs, -1, np.int64)
    done = np.full(stages * jobs, -1, np.int64)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        _run_stages(counts, order, taken, done, stages, jobs)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert (counts == 1).all()
    expected = np.arange(steps)[:, None] * stages + np.repeat(np.arange(stages), jobs)[None, :]
    np.testing.assert_array_equal(order, expected)
    np.testing.assert_array_equal(taken, steps - 1)
    np.testing.assert_array_equal(done, steps - 1)


@numba.njit(parallel=True)
def _late_finish(done, data, seen, spins):
    # one job finishes after a long computation; the other side waits past SPINS pauses (then
    # gives its core away between looks) and must still see the job's write
    for p in numba.prange(2):
        if p == 0:
            total = 0.0
            for i in range(spins):
                total += np.sqrt(float(i))
            data[0] = total
            claims.finish(done, 0, 0)
        else:
            claims.wait_for(done, 0, 0)
            seen[0] = data[0]


def test_a_long_wait_gives_the_core_away_and_still_sees_the_job():
    done, data, seen = np.full(1, -1, np.int64), np.zeros(1), np.zeros(1)
    _late_finish(done, data, seen, 3_000_000)  # some milliseconds: far past SPINS pauses
    assert seen[0] == data[0]
    np.testing.assert_allclose(data[0], np.sqrt(np.arange(3_000_000, dtype=np.float64)).sum(), rtol=1e-12)

"""speed.py's training children: one side's steps over the same batches, timed, with the
process's peak memory.

numrnn runs exactly its product step (``Trainer._step``); PyTorch runs the same step on the
row's twin (``twins.CharLM.train_step``).
"""

from harness import peak_rss_mb, time_calls
from speed_setup import (
    GRAD_CLIP,
    LR,
    THREADS,
    build_numrnn_model,
    build_torch_model,
    load_ids,
    numrnn_threads,
)

MAX_TRAIN_STEPS = 1000  # caps --min-seconds for tiny steps (config A)


class BatchCursor:
    """Trainer's walk over the streams: next batch, and whether the state must be reset."""

    def __init__(self, ids, row):
        from numrnn.data import TextStreams

        self.streams = TextStreams(ids, row.batch, row.seq_len)
        self.seq_len = row.seq_len
        self.pos = 0

    def next(self):
        tokens, targets = self.streams.batch_at(self.pos)
        self.pos += self.seq_len
        wrapped = self.pos + self.seq_len >= self.streams.stream_length
        if wrapped:
            self.pos = 0
        return tokens, targets, wrapped


def numrnn_train_step(model, optimizer, cursor, rng, carry):
    """One product training step (Trainer._step without its divergence message)."""
    tokens, targets, wrapped = cursor.next()
    result = model.loss_and_grad(tokens, targets, carry["state"], train=True, rng=rng)
    model.kernels.clip_global_norm(model.grads, GRAD_CLIP)
    optimizer.update(model.params, model.grads, LR)
    carry["state"] = model.zero_state(cursor.streams.batch) if wrapped else result.state
    carry["losses"].append(result.loss)


def torch_train_step(model, optimizer, cursor, carry):
    """The same step on the twin, the state carried the same way."""
    tokens, targets, wrapped = cursor.next()
    loss, state = model.train_step(optimizer, tokens, targets, carry["state"], GRAD_CLIP)
    carry["state"] = None if wrapped else state  # None: zeros
    carry["losses"].append(loss)


def train_result(job, warm, timed, losses, rss_base, source, threads):
    rss_peak = peak_rss_mb()
    return dict(
        step_s=timed,
        warmup_s=warm,
        chars_per_step=job.row.chars_per_step,
        first_loss=losses[0],
        last_loss=losses[-1],
        rss_after_imports_mb=rss_base,
        rss_peak_mb=rss_peak,
        rss_growth_mb=rss_peak - rss_base,
        data=source,
        threads=threads,
    )


def child_numrnn_train(job):
    import numpy as np

    import numrnn.kernels.cpu  # noqa: F401  (imported, not yet compiled or loaded)
    from numrnn.optim import Optimizer

    ids, source = load_ids(job.corpus, job.seed)
    rss_base = peak_rss_mb()
    model = build_numrnn_model(job.row, job.seed)
    optimizer = Optimizer("adam", model.layout.size, model.dtype, model.kernels)
    cursor, rng = BatchCursor(ids, job.row), np.random.default_rng(job.seed)
    carry = dict(state=model.zero_state(job.row.batch), losses=[])
    warm, timed = time_calls(
        lambda: numrnn_train_step(model, optimizer, cursor, rng, carry),
        warmup=job.warmup,
        min_calls=job.steps,
        min_seconds=job.min_seconds,
        max_calls=MAX_TRAIN_STEPS,
    )
    return train_result(job, warm, timed, carry["losses"], rss_base, source, numrnn_threads())


def child_torch_train(job):
    import torch

    torch.set_num_threads(THREADS)
    ids, source = load_ids(job.corpus, job.seed)
    rss_base = peak_rss_mb()
    torch.manual_seed(job.seed)
    model = build_torch_model(job.row)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    cursor, carry = BatchCursor(ids, job.row), dict(state=None, losses=[])
    warm, timed = time_calls(
        lambda: torch_train_step(model, optimizer, cursor, carry),
        warmup=job.warmup,
        min_calls=job.steps,
        min_seconds=job.min_seconds,
        max_calls=MAX_TRAIN_STEPS,
    )
    return train_result(
        job, warm, timed, carry["losses"], rss_base, source, dict(torch=torch.get_num_threads())
    )

"""speed.py's training children: one side's steps over the same batches, timed, with the
process's peak memory (on the CPU only: ru_maxrss counts host memory, not the GPU's).

numrnn runs exactly its product step (``Trainer._step``); PyTorch runs the same step on the
row's twin (``twins.CharLM.train_step``; on the GPU ``torch_device_step``, the same step with
the batch moved there and a synchronisation at its end).
"""

from harness import peak_rss_mb, time_calls
from speed_setup import (
    GRAD_CLIP,
    LR,
    THREADS,
    build_numrnn_model,
    build_torch_model,
    load_ids,
    load_numrnn_backend,
    numrnn_about,
    torch_about,
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


def torch_device_step(model, optimizer, tokens, targets, state, device):
    """``CharLM.train_step`` on ``device``: the batch's ids cross there first, and the step ends
    with torch.cuda.synchronize(), so that its time counts the kernels it queued, not only
    their launches."""
    import torch
    import torch.nn.functional as F
    from twins import detach_state

    logits, state = model(torch.from_numpy(tokens).to(device), state)
    targets = torch.from_numpy(targets).to(device).reshape(-1)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    optimizer.step()
    torch.cuda.synchronize()
    return loss.item(), detach_state(state)


def torch_train_step(model, optimizer, cursor, carry, device="cpu"):
    """The same step on the twin, the state carried the same way."""
    tokens, targets, wrapped = cursor.next()
    if device == "cpu":
        loss, state = model.train_step(optimizer, tokens, targets, carry["state"], GRAD_CLIP)
    else:
        loss, state = torch_device_step(model, optimizer, tokens, targets, carry["state"], device)
    carry["state"] = None if wrapped else state  # None: zeros (on the input's device)
    carry["losses"].append(loss)


def train_result(job, warm, timed, losses, rss_base, source, about):
    """One child's timings and losses, then ``about`` (its threads, or its GPU); the process's
    peak memory on the CPU only (ru_maxrss counts host memory, which says nothing of a GPU's)."""
    result = dict(
        step_s=timed,
        warmup_s=warm,
        chars_per_step=job.row.chars_per_step,
        first_loss=losses[0],
        last_loss=losses[-1],
    )
    if job.device == "cpu":
        rss_peak = peak_rss_mb()
        result.update(rss_after_imports_mb=rss_base, rss_peak_mb=rss_peak, rss_growth_mb=rss_peak - rss_base)
    return dict(result, data=source, **about)


def numrnn_training(job):
    """(step, losses, rss_base, source): numrnn's product step over job.row's batches, the list
    its losses go to, the peak memory once imports and data are loaded, and the data's name."""
    import numpy as np

    from numrnn.optim import Optimizer

    load_numrnn_backend(job.device)  # imported, not yet compiled or loaded
    ids, source = load_ids(job.corpus, job.seed)
    rss_base = peak_rss_mb()
    model = build_numrnn_model(job.row, job.seed, job.device)
    optimizer = Optimizer("adam", model.layout.size, model.dtype, model.kernels)
    cursor, rng = BatchCursor(ids, job.row), np.random.default_rng(job.seed)
    carry = dict(state=model.zero_state(job.row.batch), losses=[])
    return lambda: numrnn_train_step(model, optimizer, cursor, rng, carry), carry["losses"], rss_base, source


def torch_training(job, threads):
    """``numrnn_training`` for the PyTorch twin, on ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    ids, source = load_ids(job.corpus, job.seed)
    rss_base = peak_rss_mb()
    torch.manual_seed(job.seed)
    model = build_torch_model(job.row, job.device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    cursor, carry = BatchCursor(ids, job.row), dict(state=None, losses=[])
    step = lambda: torch_train_step(model, optimizer, cursor, carry, job.device)  # noqa: E731
    return step, carry["losses"], rss_base, source


def timed_steps(step, job):
    """time_calls as the row's job asks: its warm-up, then its steps and seconds."""
    return time_calls(
        step, warmup=job.warmup, min_calls=job.steps, min_seconds=job.min_seconds, max_calls=MAX_TRAIN_STEPS
    )


def child_numrnn_train(job):
    step, losses, rss_base, source = numrnn_training(job)
    warm, timed = timed_steps(step, job)
    result = train_result(job, warm, timed, losses, rss_base, source, numrnn_about(job.device))
    if job.device == "cpu":  # the step's products alone, now (speed_ceilings.product_seconds)
        from speed_ceilings import product_seconds

        result["products_s"] = product_seconds(job.row, job.seed)
    return result


def child_torch_train(job):
    import torch

    step, losses, rss_base, source = torch_training(job, THREADS)
    warm, timed = timed_steps(step, job)
    return train_result(job, warm, timed, losses, rss_base, source, torch_about(torch, job.device))

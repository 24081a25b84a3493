"""Optimizers over the flat parameter buffer, and learning-rate schedules.

Each optimizer is one kernel call per step (``numrnn.kernels``) with torch.optim's update
rule and defaults, so a run here follows the trajectory torch would. The optimizer's state
is a few flat arrays with the parameters' layout, saved in checkpoints under ``optim.*``.
"""

import numpy as np

from numrnn.configs import OPTIMIZERS, SCHEDULE_HELP, LRSchedule  # noqa: F401 (re-exported)
from numrnn.errors import ConfigError

# torch.optim's defaults, except SGD's momentum (torch: 0), which char-level models need.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
ADAGRAD_EPS = 1e-10
RMSPROP_ALPHA = 0.99
RMSPROP_EPS = 1e-8
SGD_MOMENTUM = 0.9

_STATE_NAMES = {
    "adam": ("exp_avg", "exp_avg_sq"),
    "adagrad": ("sum_sq",),
    "rmsprop": ("square_avg",),
    "sgd": ("momentum_buffer",),
}


class Optimizer:
    """One of OPTIMIZERS, updating a flat parameter buffer from a flat gradient buffer."""

    def __init__(self, name, size, dtype, kernels):
        if name not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {name!r}")
        self.name = name
        self.kernels = kernels
        self.steps = 0  # updates made so far (Adam's bias correction counts them)
        # In the kernels' memory (the GPU's on --device cuda), like the parameters.
        self.state = {key: kernels.xp.zeros(size, dtype=dtype) for key in _STATE_NAMES[name]}

    def update(self, params, grads, lr):
        """One step: ``params`` (P) move against ``grads`` (P) at learning rate ``lr``."""
        k, s = self.kernels, self.state
        self.steps += 1
        if self.name == "adam":
            k.adam_update(
                params,
                grads,
                s["exp_avg"],
                s["exp_avg_sq"],
                lr,
                ADAM_BETAS[0],
                ADAM_BETAS[1],
                ADAM_EPS,
                self.steps,
            )
        elif self.name == "adagrad":
            k.adagrad_update(params, grads, s["sum_sq"], lr, ADAGRAD_EPS)
        elif self.name == "rmsprop":
            k.rmsprop_update(params, grads, s["square_avg"], lr, RMSPROP_ALPHA, RMSPROP_EPS)
        else:
            k.sgd_update(params, grads, s["momentum_buffer"], lr, SGD_MOMENTUM)

    def load_state(self, tensors, steps):
        """Restore the state arrays (names as in ``self.state``) and the update count."""
        for key, target in self.state.items():
            if key not in tensors:
                raise ConfigError(f"the {self.name} optimizer state lacks {key!r}")
            source = np.asarray(tensors[key])
            if source.shape != target.shape:
                raise ConfigError(
                    f"optimizer state {key!r} has shape {source.shape}, expected {target.shape}"
                )
            target[...] = self.kernels.to_device(source)
        self.steps = int(steps)

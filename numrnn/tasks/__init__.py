"""One module per topology, each assembling its network from ``numrnn.layers`` and owning its
batches, loss, evaluation and metadata (the trainer's task interface, ``numrnn.trainer``):

- ``lm``: many-to-many, a character language model (``numrnn train``);
- ``classify``: many-to-one, a sequence classifier (``numrnn classify``); with T = 1 it is
  the one-to-one case, a plain classifier;
- ``generate``: one-to-many, a character model conditioned on a label, with start and end
  tokens (``numrnn generate``);
- ``translate``: many-to-many with unaligned lengths, an encoder-decoder with attention
  (``numrnn translate``).

This module only names them (no numpy), so the CLI and the checkpoint loader can say what a
checkpoint is and which command takes it.
"""

from dataclasses import dataclass

from numrnn.errors import CheckpointError


@dataclass(frozen=True)
class TaskInfo:
    name: str  # as recorded in checkpoints
    what: str  # what such a checkpoint holds, for messages
    commands: str  # the commands that take it


TASKS = {
    "char-lm": TaskInfo(
        "char-lm", "a character language model", "numrnn sample, numrnn eval or numrnn train --resume"
    ),
    "classify": TaskInfo(
        "classify",
        "a classifier",
        "numrnn classify eval, numrnn classify predict or numrnn classify train --resume",
    ),
    "generate": TaskInfo(
        "generate",
        "a label-conditioned generator",
        "numrnn generate sample or numrnn generate train --resume",
    ),
    "translate": TaskInfo(
        "translate",
        "a translator (an encoder-decoder)",
        "numrnn translate run, numrnn translate eval or numrnn translate train --resume",
    ),
}
DEFAULT_TASK = "char-lm"  # checkpoint format 1 held language models only


def network_class(task):
    """The Network subclass a task's checkpoints hold."""
    if task == "classify":
        from numrnn.tasks.classify import Classifier

        return Classifier
    if task == "translate":
        from numrnn.tasks.translate import Translator

        return Translator
    from numrnn.model import Model

    return Model


def layout_of(task, config):
    """The parameter layout of the network a task's checkpoint with ``config`` holds."""
    from numrnn.model import model_layout
    from numrnn.params import ParamLayout

    if task == "translate":
        from numrnn.tasks.translate import translator_layers

        return ParamLayout(
            [entry for layer in translator_layers(config).values() for entry in layer.entries()]
        )
    return model_layout(config)


def require_task(checkpoint, task):
    """Refuse a checkpoint of another task, saying what it is and which command takes it."""
    found = checkpoint.task
    if found == task:
        return
    info = TASKS.get(found)
    if info is None:
        raise CheckpointError(
            f"{checkpoint.path} holds a model for the task {found!r}, which this "
            f"numrnn does not know; upgrade numrnn"
        )
    raise CheckpointError(
        f"{checkpoint.path} is {info.what}, not {TASKS[task].what}; use it with {info.commands}"
    )

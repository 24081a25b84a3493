"""The body of `numrnn train`, imported only when the command runs (it loads numpy/numba)."""

import shlex
import sys
from pathlib import Path

import numpy as np

from numrnn.checkpoint import best_path, check_writable, load_checkpoint
from numrnn.tunables import kernels_compiled
from numrnn.data import Vocab, read_text, split_by_position
from numrnn.errors import CheckpointError, ConfigError, DataError
from numrnn.model import Model, ModelConfig
from numrnn.tasks import lm, require_task
from numrnn.trainer import STOP_REASONS, Trainer, TrainConfig
from numrnn_cli.console import err_console
from numrnn_cli.params import format_duration
from numrnn_cli.progress import TrainView
from numrnn_cli.train import MODEL_OPTIONS, TRAIN_OPTIONS, InterruptFlag


def run_training(corpus, options, explicit):
    """Everything `numrnn train` does after parsing; returns the TrainResult."""
    text = read_text(corpus)
    resume = load_checkpoint(options["resume"]) if options["resume"] else None
    if resume is not None:
        model_config, train_config, vocab, dtype = _resumed_configs(resume, options, explicit)
        out = options["out"] or options["resume"]
    else:
        vocab = Vocab.from_text(text)
        model_config = ModelConfig(cell=options["cell"], vocab_size=len(vocab),
                                   hidden=options["hidden"], layers=options["layers"],
                                   embed=options["embed"], dropout=options["dropout"])
        train_config = _train_config(options)
        dtype = options["dtype"]
        out = options["out"] or Path(Path(corpus).stem + ".safetensors")
        for path in (out, best_path(out)):
            check_writable(path)  # first, so that a folder given as -o is named as such
            if path.exists() and not options["force"]:
                raise CheckpointError(
                    f"{path} already exists; continue it with --resume {path}, or pass --force "
                    f"to overwrite it, or choose another file with -o")
    model_config.validate()
    train_config.validate()
    ids = _encode(vocab, text, corpus, resumed=resume is not None)
    train_ids, val_ids = _split(ids, train_config.val_frac)

    if resume is not None:
        check_writable(out)
        check_writable(best_path(out))
    metrics = _open_metrics(options["metrics"])

    model = Model(model_config, dtype=np.float32 if dtype == "float32" else np.float64,
                  device=options["device"])
    rng = np.random.default_rng(train_config.seed)
    if resume is None:
        model.init_weights(rng)
    else:
        from numrnn.params import from_torch

        from_torch(model.weights, resume.weights)

    console = err_console()
    try:
        cold = not kernels_compiled(f"{model_config.cell}_forward", f"{model_config.cell}_backward",
                                    f"{train_config.optimizer}_update")
        with TrainView(console, quiet=options["quiet"], metrics=metrics, compiling=cold) as view:
            task = lm.LanguageModelTask(model, vocab, train_ids, val_ids,
                                        batch_size=train_config.batch_size,
                                        seq_len=train_config.seq_len, on_event=view)
            trainer = Trainer(task, train_config, out, on_event=view, resume=resume, rng=rng)
            stop = InterruptFlag(lambda: view.say(
                "[yellow]stopping after this step and saving (Ctrl-C again quits without saving)[/]"))
            with stop:
                result = trainer.run(should_stop=stop)
    finally:
        if metrics is not None:
            metrics.close()
    _summarise(result, corpus, options["quiet"])
    return result


def _train_config(options):
    values = {name: options[name] for name in TRAIN_OPTIONS}
    values["max_time"] = values["max_time"] or 0.0
    return TrainConfig(**values)


def _encode(vocab, text, corpus, resumed):
    if not resumed:
        return vocab.encode(text)[0]
    unknown = sorted({char for char in set(text) if char not in vocab})
    if unknown:
        from numrnn.data import describe_char

        shown = ", ".join(describe_char(char) for char in unknown[:5])
        raise DataError(f"{corpus} has {len(unknown)} character(s) the checkpoint's vocabulary "
                        f"lacks ({shown}); resume on the text the model was trained on")
    return vocab.encode(text)[0]


def _resumed_configs(checkpoint, options, explicit):
    """The checkpoint's configs, with the options given on this command line applied."""
    meta = checkpoint.meta
    require_task(checkpoint, lm.NAME)
    if "train" not in meta or "progress" not in meta:
        raise CheckpointError(f"{checkpoint.path} is not a language-model training checkpoint, "
                              f"so it cannot be resumed")
    saved = checkpoint.model_config
    for name in MODEL_OPTIONS:
        if name in explicit and options[name] != getattr(saved, name):
            raise ConfigError(
                f"--{name} {options[name]} contradicts the checkpoint, whose model has "
                f"{name} {getattr(saved, name)}; leave --{name} out to resume it")
    if "dtype" in explicit and options["dtype"] != meta["dtype"]:
        raise ConfigError(f"--dtype {options['dtype']} contradicts the checkpoint ({meta['dtype']}); "
                          f"leave --dtype out to resume it")
    if "optimizer" in explicit and options["optimizer"] != meta["train"].get("optimizer"):
        raise ConfigError(f"--optimizer {options['optimizer']} contradicts the checkpoint, trained "
                          f"with {meta['train'].get('optimizer')}; leave --optimizer out to resume it")
    model_config = saved
    if "dropout" in explicit:
        from dataclasses import replace

        model_config = replace(saved, dropout=options["dropout"])
    known = set(TrainConfig.__dataclass_fields__)
    base = {key: value for key, value in meta["train"].items() if key in known}
    values = dict(base)
    for name in TRAIN_OPTIONS:
        if name in explicit:
            values[name] = options[name]
    values["max_time"] = values.get("max_time") or 0.0
    try:
        train_config = TrainConfig(**values)
    except TypeError as exc:
        raise CheckpointError(f"{checkpoint.path}: its training configuration is not valid: {exc}") from None
    return model_config, train_config, checkpoint.vocab, meta["dtype"]


def _split(ids, val_frac):
    if val_frac == 0:
        return ids, None
    return split_by_position(ids, val_frac)


def _open_metrics(path):
    if path is None:
        return None
    try:
        return open(path, "a", encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot write the metrics file {path}: {exc.strerror or exc}") from None


def _summarise(result, corpus, quiet):
    console = err_console()
    resume_cmd = f"numrnn train {shlex.quote(str(corpus))} --resume {shlex.quote(str(result.out))}"
    if result.reason == "interrupted":
        console.print(f"[yellow]interrupted[/] at step {result.step:,}; saved {result.out}. "
                      f"Resume with:\n  {resume_cmd}", highlight=False, soft_wrap=True)
        return
    if quiet:
        return
    lines = [f"stopped at step {result.step:,} ({STOP_REASONS[result.reason]}) after "
             f"{format_duration(result.elapsed_s)} of training; saved {result.out}"]
    if result.best_out is not None:
        lines.append(f"best validation loss {result.best_val_loss:.4f} nats/char "
                     f"({result.best_val_loss / np.log(2):.4f} bits/char) in {result.best_out}")
    lines.append(f"sample from it:  numrnn sample -c {shlex.quote(str(result.out))}")
    if result.reason in ("max_steps", "max_epochs"):
        lines.append(f"train further:   {resume_cmd} --{result.reason.replace('_', '-')} N")
    console.print("\n".join(lines), highlight=False, soft_wrap=True)
    sys.stderr.flush()

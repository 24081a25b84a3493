"""The training loop: batches, exact resume, evaluation, stopping rules, divergence."""

import math

import numpy as np
import pytest

import numrnn.tasks.lm as lm_module
from numrnn.checkpoint import load_checkpoint
from numrnn.data import TextStreams, Vocab
from numrnn.errors import ConfigError, DataError, TrainingDiverged
from numrnn.model import Model, ModelConfig
from numrnn.optim import LRSchedule
from numrnn.params import from_torch
from numrnn.tasks.lm import LanguageModelTask, evaluate
from numrnn.trainer import EvalReport, Score, StepDone, TrainConfig, Trainer
from tests.helpers import step_losses

TEXT = "the quick brown fox jumps over the lazy dog; " * 40 + "pack my box with five dozen liquor jugs. " * 40
VOCAB = Vocab.from_text(TEXT)
IDS = VOCAB.encode(TEXT)[0]


def build(cell="lstm", dropout=0.0, seed=0, dtype=np.float32, layers=2):
    config = ModelConfig(cell=cell, vocab_size=len(VOCAB), hidden=16, layers=layers, embed=8, dropout=dropout)
    rng = np.random.default_rng(seed)
    return Model(config, dtype=dtype).init_weights(rng), rng


def make_trainer(tmp_path, name="run", model=None, rng=None, resume=None, events=None, **options):
    defaults = dict(seq_len=10, batch_size=4, eval_every=7, checkpoint_every=5, log_every=1, max_epochs=0)
    config = TrainConfig(**{**defaults, **options})
    if model is None:
        model, rng = build()
    split = len(IDS) - 200
    on_event = events.append if events is not None else None
    task = LanguageModelTask(
        model,
        VOCAB,
        IDS[:split],
        IDS[split:],
        batch_size=config.batch_size,
        seq_len=config.seq_len,
        on_event=on_event,
    )
    return Trainer(task, config, tmp_path / f"{name}.safetensors", on_event=on_event, resume=resume, rng=rng)


# --------------------------------------------------------------------------- batches


def test_streams_are_contiguous_and_targets_are_the_next_characters():
    ids = np.arange(103)
    streams = TextStreams(ids, batch=4, seq_len=5)
    assert streams.stream_length == 25 and streams.steps_per_epoch == 4
    first, first_targets = streams.batch_at(0)
    second, _ = streams.batch_at(5)
    assert first.shape == (5, 4)
    np.testing.assert_array_equal(first[:, 2], np.arange(50, 55))
    np.testing.assert_array_equal(first_targets, first + 1)
    np.testing.assert_array_equal(second[0], first[-1] + 1)  # stream b continues where it stopped


def test_a_text_shorter_than_one_batch_is_a_clear_error():
    with pytest.raises(
        DataError,
        match=r"fewer than one batch needs \(batch size 8 x \(sequence "
        r"length 20 \+ 1\) = 168\).*--batch-size",
    ):
        TextStreams(np.arange(100), batch=8, seq_len=20)


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("cell,optimizer", [("lstm", "adam"), ("gru", "rmsprop"), ("rnn", "sgd")])
def test_resume_continues_exactly(tmp_path, cell, optimizer):
    """40 steps straight equal 20 steps, a checkpoint, and 20 more: losses and every bit."""
    options = dict(optimizer=optimizer, lr_decay="step:9:0.5")
    straight_events = []
    model, rng = build(cell=cell, dropout=0.25)
    straight = make_trainer(tmp_path, "straight", model, rng, events=straight_events, max_steps=40, **options)
    straight.run()

    first_events = []
    model, rng = build(cell=cell, dropout=0.25)
    make_trainer(tmp_path, "split", model, rng, events=first_events, max_steps=20, **options).run()
    checkpoint = load_checkpoint(tmp_path / "split.safetensors")
    resumed_model = checkpoint.build_model()
    second = make_trainer(
        tmp_path,
        "split",
        resumed_model,
        np.random.default_rng(999),
        resume=checkpoint,
        events=first_events,
        max_steps=40,
        **options,
    )
    second.run()

    assert step_losses(first_events) == step_losses(straight_events)
    assert len(step_losses(straight_events)) == 40
    np.testing.assert_array_equal(resumed_model.params, straight.model.params)
    for key, value in straight.optimizer.state.items():
        np.testing.assert_array_equal(second.optimizer.state[key], value)
    np.testing.assert_array_equal(second.task.state.h, straight.task.state.h)


def test_resume_at_the_limit_trains_no_further(tmp_path):
    make_trainer(tmp_path, max_steps=6).run()
    checkpoint = load_checkpoint(tmp_path / "run.safetensors")
    events = []
    result = make_trainer(
        tmp_path,
        model=checkpoint.build_model(),
        rng=np.random.default_rng(0),
        resume=checkpoint,
        events=events,
        max_steps=6,
    ).run()
    assert result.reason == "max_steps" and result.step == 6
    assert step_losses(events) == []


def test_resume_refuses_another_optimizer(tmp_path):
    make_trainer(tmp_path, max_steps=2).run()
    checkpoint = load_checkpoint(tmp_path / "run.safetensors")
    with pytest.raises(ConfigError, match="--optimizer adam"):
        make_trainer(
            tmp_path,
            model=checkpoint.build_model(),
            rng=np.random.default_rng(0),
            resume=checkpoint,
            optimizer="sgd",
            max_steps=4,
        )


def test_checkpoint_holds_progress_rng_and_state(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=5)
    trainer.run()
    checkpoint = load_checkpoint(tmp_path / "run.safetensors")
    progress = checkpoint.meta["progress"]
    assert progress["step"] == 5 and progress["position"] == 50
    assert progress["optimizer_steps"] == 5
    assert checkpoint.meta["rng"] == trainer.rng.bit_generator.state
    assert checkpoint.meta["train"]["max_steps"] == 5
    np.testing.assert_array_equal(checkpoint.state["c"], trainer.task.state.c)


# --------------------------------------------------------------------------- evaluation


def test_evaluate_one_stream_equals_one_long_forward():
    model, _ = build(dtype=np.float64)
    ids = IDS[:301]
    loss, chars = evaluate(model, ids, batch_size=1, seq_len=37)
    whole = model.loss(ids[:-1].reshape(-1, 1), ids[1:].reshape(-1, 1)).loss
    assert chars == 300
    assert loss == pytest.approx(whole, rel=1e-12)


def test_evaluate_several_streams_scores_every_stream_with_carried_state():
    model, _ = build(dtype=np.float64)
    ids = IDS[:403]
    loss, chars = evaluate(model, ids, batch_size=4, seq_len=30)
    streams = ids[:400].reshape(4, 100)
    expected = np.mean([model.loss(s[:-1].reshape(-1, 1), s[1:].reshape(-1, 1)).loss for s in streams])
    assert chars == 4 * 99
    assert loss == pytest.approx(expected, rel=1e-12)


def test_training_learns_the_text(tmp_path):
    events = []
    make_trainer(tmp_path, events=events, max_steps=150, lr=1e-2, eval_every=50).run()
    evals = [e for e in events if isinstance(e, EvalReport)]
    assert evals[0].val_loss > evals[-1].val_loss
    assert evals[-1].val_loss < 1.0  # a repetitive text: far below log(V) = 3.2 nats
    assert load_checkpoint(tmp_path / "run.best.safetensors").meta["progress"][
        "best_val_loss"
    ] == pytest.approx(min(e.val_loss for e in evals))


# --------------------------------------------------------------------------- stopping


def test_patience_stops_after_evaluations_without_improvement(tmp_path, monkeypatch):
    losses = iter([3.0, 2.0, 2.5, 2.4, 2.2, 1.0])
    monkeypatch.setattr(lm_module, "evaluate", lambda *a, **k: (next(losses), 10))
    result = make_trainer(tmp_path, eval_every=2, patience=3, max_steps=100).run()
    assert result.reason == "patience"
    assert result.step == 10
    assert result.best_val_loss == 2.0
    assert load_checkpoint(result.best_out).meta["progress"]["step"] == 4


def test_max_epochs_stops_at_an_epoch_boundary(tmp_path):
    trainer = make_trainer(tmp_path, max_epochs=2)
    result = trainer.run()
    assert result.reason == "max_epochs"
    assert result.step == 2 * trainer.task.streams.steps_per_epoch


def test_max_time_stops_the_session(tmp_path):
    result = make_trainer(tmp_path, max_time=1e-9).run()
    assert result.reason == "max_time"
    assert result.step == 0
    assert (tmp_path / "run.safetensors").exists()


def test_stop_request_saves_a_resumable_checkpoint(tmp_path):
    calls = []

    def stop_after_three():
        calls.append(1)
        return len(calls) > 3

    result = make_trainer(tmp_path, max_steps=100).run(should_stop=stop_after_three)
    assert result.reason == "interrupted" and result.step == 3
    assert load_checkpoint(tmp_path / "run.safetensors").meta["progress"]["step"] == 3


def test_a_nan_loss_stops_with_a_remedy_and_keeps_the_last_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=5)
    trainer.run()
    saved = (tmp_path / "run.safetensors").read_bytes()
    checkpoint = load_checkpoint(tmp_path / "run.safetensors")
    model = checkpoint.build_model()
    model.weights["head.bias"][0] = np.nan
    poisoned = make_trainer(
        tmp_path, model=model, rng=np.random.default_rng(0), resume=checkpoint, max_steps=10
    )
    with pytest.raises(
        TrainingDiverged,
        match=r"loss became nan at step 6; .*last good checkpoint .*step 5. is kept; "
        r"try a lower --lr.*--grad-clip",
    ):
        poisoned.run()
    assert (tmp_path / "run.safetensors").read_bytes() == saved


def test_an_infinite_gradient_is_caught_too(tmp_path):
    model, rng = build()
    model.weights["rnn.weight_hh_l0"][0, 0] = np.inf
    with pytest.raises(TrainingDiverged, match="at step 1; training stopped and no checkpoint was written"):
        make_trainer(tmp_path, model=model, rng=rng, max_steps=3).run()
    assert not (tmp_path / "run.safetensors").exists()


# --------------------------------------------------------------------------- schedules


def test_schedules():
    cosine = LRSchedule.parse("cosine:1e-4")
    assert cosine.lr(1e-2, 0, 100) == pytest.approx(1e-2)
    assert cosine.lr(1e-2, 50, 100) == pytest.approx(1e-4 + (1e-2 - 1e-4) / 2)
    assert cosine.lr(1e-2, 100, 100) == pytest.approx(1e-4)
    assert LRSchedule.parse("linear").lr(1.0, 25, 100) == pytest.approx(0.75)
    step = LRSchedule.parse("step:10:0.5")
    assert [step.lr(1.0, s) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    assert LRSchedule.parse("none").lr(0.3, 1000) == 0.3
    for bad in ("cosine:x", "step:0:0.5", "step:10:2", "warmup", "exp:0.9"):
        with pytest.raises(ConfigError, match="not a schedule"):
            LRSchedule.parse(bad)


def test_a_decay_to_a_horizon_needs_a_limit(tmp_path):
    with pytest.raises(ConfigError, match="needs --max-steps or --max-epochs"):
        make_trainer(tmp_path, lr_decay="cosine", max_epochs=0, max_steps=0)


def test_the_schedule_reaches_the_optimizer(tmp_path):
    events = []
    make_trainer(tmp_path, events=events, max_steps=4, lr=1.0, lr_decay="linear", grad_clip=1.0).run()
    assert [e.lr for e in events if isinstance(e, StepDone)] == [1.0, 0.75, 0.5, 0.25]


def test_train_config_validation_names_the_field():
    for field, value in (
        ("seq_len", 0),
        ("batch_size", 0),
        ("lr", -1.0),
        ("val_frac", 1.0),
        ("grad_clip", -1.0),
        ("optimizer", "lbfgs"),
        ("lr", math.inf),
    ):
        with pytest.raises(ConfigError, match=field):
            TrainConfig(**{field: value}).validate()


def test_weights_of_a_resumed_model_come_from_the_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=3)
    trainer.run()
    checkpoint = load_checkpoint(tmp_path / "run.safetensors")
    fresh, _ = build(seed=5)
    from_torch(fresh.weights, checkpoint.weights)
    np.testing.assert_array_equal(fresh.params, trainer.model.params)


def test_a_validation_split_too_small_to_score_is_announced(tmp_path):
    events = []
    model, rng = build()
    task = LanguageModelTask(
        model, VOCAB, IDS[:-1], IDS[-1:], batch_size=4, seq_len=10, on_event=events.append
    )
    trainer = Trainer(
        task,
        TrainConfig(seq_len=10, batch_size=4, max_steps=2),
        tmp_path / "m.safetensors",
        on_event=events.append,
        rng=rng,
    )
    notices = [e.message for e in events if type(e).__name__ == "Notice"]
    assert notices and "too few to score" in notices[0]
    assert trainer.run().best_out is None


def test_a_task_may_choose_the_best_checkpoint_by_a_metric(tmp_path, monkeypatch):
    """select_by names a metric, higher better (a translator's chrF): it, not the loss,
    chooses the best checkpoint and drives --patience; the checkpoint records both."""
    scores = iter([(3.0, 10.0), (2.0, 12.0), (2.5, 15.0), (2.4, 14.0), (2.2, 13.0), (1.0, 11.0)])

    def evaluate(self, should_stop=None):
        loss, metric = next(scores)
        return Score(loss=loss, count=10, unit="chars", metrics={"chrf": metric})

    monkeypatch.setattr(LanguageModelTask, "evaluate", evaluate)
    monkeypatch.setattr(LanguageModelTask, "select_by", "chrf", raising=False)
    events = []
    result = make_trainer(tmp_path, eval_every=2, patience=3, max_steps=100, events=events).run()
    assert result.reason == "patience" and result.step == 12
    assert (result.best_val_loss, result.best_selection, result.select_by) == (2.5, -15.0, "chrf")
    progress = load_checkpoint(result.best_out).meta["progress"]
    assert (progress["step"], progress["best_selection"]) == (6, -15.0)
    reports = [event for event in events if isinstance(event, EvalReport)]
    assert [report.improved for report in reports] == [True, True, True, False, False, False]

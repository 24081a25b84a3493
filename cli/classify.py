"""`numrnn classify`: many-to-one models that read a line of text and name its class."""

from pathlib import Path

import click

from numrnn_cli.params import device_option
from numrnn_cli.training import explicit_options, limit_threads, training_options


@click.group("classify")
def classify():
    """Classify lines of text: a name's language, a sentence's sentiment.

    DATA is a folder of LABEL.txt files with one example per line (the file's name is
    the label), or a UTF-8 TSV file of text<TAB>label lines. The model reads each line
    character by character and names its class from the state after its last character.

    \b
    Examples:
      numrnn classify train ../shared/data/names -o names.safetensors --max-time 2m
      numrnn classify eval -c names.best.safetensors
      numrnn classify predict -c names.best.safetensors Nakamura Schmidt O\\'Brien
    """


@classify.command("train")
@click.argument("data", type=click.Path(path_type=Path))
@click.option(
    "--bidirectional",
    is_flag=True,
    help="Read each line in both directions and classify from both final states.",
)
@click.option(
    "--balance",
    is_flag=True,
    help="Weight each class's loss by the inverse of its frequency, so rare classes count "
    "as much as common ones.",
)
@click.option(
    "--test-frac",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.1,
    help="Share of each label's examples held out for `numrnn classify eval`; 0: none.",
)
@training_options(
    cell="gru",
    hidden=128,
    layers=1,
    embed=0,
    batch_size=64,
    lr=1e-3,
    max_epochs=20,
    val_frac=0.1,
    batch_help="Examples per step (batched by similar length).",
    val_help="Share of each label's examples held out for validation (early stopping and the "
    "best checkpoint); 0: none.",
    data_name="DATA",
)
@click.pass_context
def train(ctx, data, **options):
    """Train a classifier on labelled lines of text.

    The examples of each label are split with --seed into training, validation
    (--val-frac) and test (--test-frac) sets in the same proportions; the vocabulary is
    the training examples' characters. Each step reads --batch-size examples of similar
    length. Every --eval-every steps the validation set is scored (loss, accuracy,
    macro-F1) and the best model so far is kept in FILE.best.safetensors; the latest
    goes to FILE every --checkpoint-every steps and at the end.

    Ctrl-C saves a checkpoint and exits 130; --resume FILE continues exactly where it
    stopped (weights, optimizer, batches, random state), taking every option you do not
    give again from the checkpoint.

    \b
    Examples:
      numrnn classify train ../shared/data/names -o names.safetensors --max-time 2m
      numrnn classify train reviews.tsv --embed 32 --hidden 256 --bidirectional --balance
      numrnn classify train ../shared/data/names --resume names.safetensors --max-epochs 40
    """
    limit_threads(options["threads"])
    from numrnn_cli.classify_run import CLASSIFIER
    from numrnn_cli.training_run import run_training

    run_training(CLASSIFIER, data, options, explicit_options(ctx, options))


@classify.command("eval")
@click.option(
    "-c",
    "--checkpoint",
    type=click.Path(path_type=Path),
    required=True,
    help="The classifier's checkpoint (.safetensors).",
)
@click.argument("data", type=click.Path(path_type=Path), required=False)
@click.option(
    "--split",
    "split_name",
    type=click.Choice(["test", "val", "train", "all"]),
    default=None,
    help="Which examples to score.  [default: all of DATA, or the checkpoint's test split without DATA]",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print the scores as JSON on stdout: {"accuracy", "macro_f1", "per_class", "confusion", ...}.',
)
@device_option
def evaluate(checkpoint, data, split_name, as_json, device):
    """Score a classifier: accuracy, macro-F1, per-class precision, recall and F1, and a
    confusion matrix.

    Without DATA, the checkpoint's own test split is scored: the data it was trained on is
    read again from where it was, checked against the digest recorded with it, and split
    as in training. With DATA (a folder or TSV of the same labels), every example in it is
    scored. Characters the model never saw are dropped (with a warning).

    \b
    Examples:
      numrnn classify eval -c names.best.safetensors
      numrnn classify eval -c names.best.safetensors held_out_names/ --json > scores.json
      numrnn classify eval -c names.best.safetensors --split val
    """
    from numrnn_cli.classify_run import run_eval

    run_eval(checkpoint, data, split_name, as_json, device)


@classify.command("predict")
@click.option(
    "-c",
    "--checkpoint",
    type=click.Path(path_type=Path),
    required=True,
    help="The classifier's checkpoint (.safetensors).",
)
@click.argument("texts", nargs=-1, required=True)
@click.option(
    "-k",
    "--top-k",
    type=click.IntRange(min=1),
    default=3,
    help="How many of the most probable labels to print per text.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='One JSON object per text: {"text", "predictions": [{"label", "probability"}]}.',
)
@device_option
def predict(checkpoint, texts, top_k, as_json, device):
    """Name the most probable labels of each TEXT, with their probabilities.

    One line per text on stdout: the text, then label and probability pairs, separated by
    tabs (pipe-friendly). Give - to read one text per line from stdin. Characters the
    model never saw are dropped, with a warning naming them.

    \b
    Examples:
      numrnn classify predict -c names.best.safetensors Nakamura Schmidt
      cut -f1 people.tsv | numrnn classify predict -c names.best.safetensors - --top-k 1
      numrnn classify predict -c names.best.safetensors Dvorak --json
    """
    from numrnn_cli.classify_run import run_predict

    run_predict(checkpoint, texts, top_k, as_json, device)

"""`numrnn translate`: encoder-decoder models that read a line of text and write another."""

from pathlib import Path

import click

from numrnn.configs import ATTENTIONS
from numrnn_cli.params import device_option
from numrnn_cli.training import COUNT, POSITIVE, explicit_options, limit_threads, training_options

DEFAULT_BEAM = 5
SPLITS = ("test", "val", "train", "all")


@click.group("translate")
def translate():
    """Translate lines of text: English to French, spelling normalisation, transliteration.

    PAIRS is a UTF-8 TSV file of source<TAB>target lines (further columns are ignored),
    such as ../shared/data/eng-fra.txt. An encoder reads the source character by character;
    a decoder, attending to the encoder's outputs, writes the target one character at a
    time until it writes an end token.

    \b
    Examples:
      numrnn translate train ../shared/data/eng-fra.txt -o fra.safetensors --max-time 5m
      numrnn translate run -c fra.best.safetensors "I'm cold." "Go away!"
      numrnn translate run -c fra.best.safetensors --show-attention "Thank you."
      numrnn translate eval -c fra.best.safetensors
    """


@translate.command("train")
@click.argument("pairs", type=click.Path(path_type=Path))
@click.option("--reverse", is_flag=True, help="Swap the columns: learn to write the first from the second.")
@click.option(
    "--attention",
    type=click.Choice(ATTENTIONS),
    default="general",
    help="How the decoder looks at the source: Luong's dot or general (bilinear) score, "
    "Bahdanau's additive one, or none (the decoder starts from the encoder's final state only).",
)
@click.option(
    "--bidirectional/--unidirectional",
    default=True,
    help="Read each source in both directions (the encoder's outputs are both directions' "
    "states side by side).",
)
@click.option(
    "--decoder-hidden",
    type=COUNT,
    default=0,
    help="The decoder's hidden units; 0: the encoder's output width (2 x --hidden when "
    "bidirectional). dot attention needs the two equal.",
)
@click.option(
    "--max-source-len",
    type=COUNT,
    default=0,
    help="Leave out training and validation pairs whose source is longer than this (counted "
    "in the summary); also the longest source `translate run` accepts.  [default: 0, no "
    "limit: the longest training source]",
)
@click.option(
    "--max-target-len",
    type=COUNT,
    default=0,
    help="Leave out training and validation pairs whose target is longer than this (counted).  "
    "[default: 0, no limit]",
)
@click.option(
    "--test-frac",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.05,
    help="Share of the pairs held out for `numrnn translate eval`; 0: none.",
)
@training_options(
    cell="gru",
    hidden=128,
    layers=1,
    embed=64,
    batch_size=64,
    lr=2e-3,
    max_epochs=30,
    val_frac=0.05,
    eval_every=100,
    checkpoint_every=100,
    batch_help="Pairs per step (batched by similar target, then source length).",
    val_help="Share of the pairs held out for validation (loss per target character, greedy "
    "chrF, which chooses the best checkpoint); 0: none.",
    data_name="PAIRS",
    embed_help="Character embedding width of the encoder and the decoder; 0 feeds one-hot vectors.",
)
@click.pass_context
def train(ctx, pairs, **options):
    """Train a translator on sentence pairs.

    The pairs are shuffled with --seed and split into test (--test-frac), validation
    (--val-frac) and training sets; the source vocabulary is the training sources'
    characters, the target vocabulary the training targets' plus a start and an end token.
    Each step reads --batch-size pairs of similar lengths, teacher-forced: the decoder
    reads the reference target and learns to predict its next character. Every
    --eval-every steps the validation pairs are scored (loss per target character, the end
    token counted) and translated greedily (up to 500 of them) for their chrF; the model
    that translates them best so far (by chrF: the loss turns up long before the
    translations stop improving) is kept in FILE.best.safetensors, and --patience counts
    evaluations without a better chrF. The latest model goes to FILE every
    --checkpoint-every steps and at the end.

    Ctrl-C saves a checkpoint and exits 130; --resume FILE continues exactly where it
    stopped (weights, optimizer, batches, random state), taking every option you do not
    give again from the checkpoint.

    \b
    Examples:
      numrnn translate train ../shared/data/eng-fra.txt -o fra.safetensors --max-time 5m
      numrnn translate train ../shared/data/eng-fra.txt --reverse -o eng.safetensors
      numrnn translate train pairs.tsv --cell lstm --attention additive --max-source-len 60
      numrnn translate train ../shared/data/eng-fra.txt --resume fra.safetensors --max-epochs 60
    """
    limit_threads(options["threads"])
    from numrnn_cli.training_run import run_training
    from numrnn_cli.translate_run import TRANSLATOR

    run_training(TRANSLATOR, pairs, options, explicit_options(ctx, options))


checkpoint_option = click.option(
    "-c",
    "--checkpoint",
    type=click.Path(path_type=Path),
    required=True,
    help="The translator's checkpoint (.safetensors).",
)


def decoding_options(function):
    """--beam, --greedy, --length-penalty and --max-length, shared by run and eval."""
    specs = [
        click.option(
            "--beam",
            type=POSITIVE,
            default=DEFAULT_BEAM,
            help="Beam width: how many partial translations are kept at each character.",
        ),
        click.option(
            "--length-penalty",
            "alpha",
            type=click.FloatRange(min=0),
            default=1.0,
            metavar="ALPHA",
            help="Rank finished translations by log-probability / length**ALPHA: 0 favours "
            "short outputs, 1 is the per-character average.",
        ),
        click.option(
            "--max-length",
            type=POSITIVE,
            default=None,
            help="At most this many output characters; longer ones are cut (with a warning).  "
            "[default: twice the longest training target]",
        ),
        click.option(
            "--truncate",
            is_flag=True,
            help="Cut sources longer than the model's limit (the longest it was trained on) "
            "instead of refusing them.",
        ),
    ]
    for spec in reversed(specs):
        function = spec(function)
    return function


@translate.command("run")
@checkpoint_option
@click.argument("texts", nargs=-1, required=True)
@decoding_options
@click.option("--greedy", is_flag=True, help="Take the most probable character at each step (no beam).")
@click.option(
    "--n-best",
    type=POSITIVE,
    default=1,
    help="Print the N best translations of each text, tab-separated, each followed by its score "
    "(log-probability / length**ALPHA).",
)
@click.option(
    "--show-attention",
    is_flag=True,
    help="After each translation, draw which source characters each output character "
    "attended to, as a shaded grid.",
)
@device_option
def run(checkpoint, texts, beam, alpha, max_length, truncate, greedy, n_best, show_attention, device):
    """Translate each TEXT: one translation per line on stdout.

    Give - to read one text per line from stdin (a blank line gives a blank line). The
    search keeps --beam partial translations per text and returns the best finished one by
    length-normalised log-probability; all texts are decoded together. Characters the
    model never saw are dropped, with a warning naming them.

    \b
    Examples:
      numrnn translate run -c fra.best.safetensors "I'm cold." "Go away!"
      numrnn translate run -c fra.best.safetensors --n-best 3 "We won."
      numrnn translate run -c fra.best.safetensors --show-attention "Thank you."
      cut -f1 sentences.tsv | numrnn translate run -c fra.best.safetensors - > french.txt
    """
    if n_best > beam:
        raise click.UsageError(f"--n-best {n_best} needs a beam at least as wide (--beam {n_best})")
    if greedy and n_best > 1:
        raise click.UsageError("--greedy gives one translation per text; leave out --n-best or --greedy")
    from numrnn_cli.translate_run import run_translate

    run_translate(
        checkpoint,
        list(texts),
        beam=0 if greedy else beam,
        alpha=alpha,
        n_best=n_best,
        max_length=max_length,
        truncate=truncate,
        show_attention=show_attention,
        device=device,
    )


@translate.command("eval")
@checkpoint_option
@click.argument("pairs", type=click.Path(path_type=Path), required=False)
@click.option(
    "--split",
    "split_name",
    type=click.Choice(SPLITS),
    default=None,
    help="Which pairs to score.  [default: all of PAIRS, or the checkpoint's test split without PAIRS]",
)
@click.option(
    "--reverse/--no-reverse",
    default=None,
    help="Swap PAIRS' columns.  [default: as the checkpoint's training data]",
)
@decoding_options
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print the scores as JSON on stdout: {"loss", "greedy": {"chrf", "exact_match", ...}, '
    '"beam": {...}, ...}.',
)
@device_option
def evaluate(checkpoint, pairs, split_name, reverse, beam, alpha, max_length, truncate, as_json, device):
    """Score a translator: chrF and exact-match rate of its greedy and beam translations, and
    its loss per target character.

    chrF is sacrebleu's chrF2 (character n-grams up to 6, recall weighted twice, over the
    whole corpus, 0-100). Without PAIRS the checkpoint's own test split is scored: the data
    it was trained on is read again from where it was, checked against the digest recorded
    with it, and split as in training. Pairs whose target holds characters the model cannot
    write count in chrF but not in the loss.

    \b
    Examples:
      numrnn translate eval -c fra.best.safetensors
      numrnn translate eval -c fra.best.safetensors --beam 10 --length-penalty 0.6
      numrnn translate eval -c fra.best.safetensors more-pairs.tsv --json > scores.json
    """
    from numrnn_cli.translate_run import run_eval

    run_eval(
        checkpoint,
        pairs,
        split_name,
        reverse=reverse,
        beam=beam,
        alpha=alpha,
        max_length=max_length,
        truncate=truncate,
        as_json=as_json,
        device=device,
    )

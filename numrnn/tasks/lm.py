"""Character-level language model tasks beyond training: scoring a text."""

import math
from dataclasses import dataclass

from numrnn.errors import DataError
from numrnn.trainer import evaluate

SCORE_CHUNK = 256  # characters per forward call; the state carries across chunks


@dataclass
class TextScore:
    loss: float            # mean next-character cross-entropy, nats/char
    chars: int             # characters predicted (the first character has no prediction)
    unknown_chars: int     # characters outside the vocabulary, dropped from the stream

    @property
    def bpc(self):
        return self.loss / math.log(2.0)

    @property
    def perplexity(self):
        return math.exp(self.loss)

    def to_dict(self):
        return {"loss": self.loss, "bpc": self.bpc, "perplexity": self.perplexity,
                "chars": self.chars, "unknown_chars": self.unknown_chars}


def score_text(model, vocab, text, *, what="the text"):
    """The model's sequential loss on ``text``: one stream from a zero state, state carried.

    Characters outside ``vocab`` are dropped from the stream and counted.
    """
    ids, unknown = vocab.encode(text, drop_unknown=True)
    if len(ids) < 2:
        raise DataError(f"{what} has {len(ids)} character(s) the model knows "
                        f"({unknown} unknown dropped); scoring needs at least 2")
    loss, chars = evaluate(model, ids, batch_size=1, seq_len=SCORE_CHUNK)
    return TextScore(loss=loss, chars=chars, unknown_chars=unknown)

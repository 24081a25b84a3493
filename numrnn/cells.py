"""The recurrent cells numrnn implements (importable without numpy or numba)."""

CELLS = ("rnn", "lstm", "gru")
# Gate blocks per cell: the gate width G is this times the hidden size H.
GATES_PER_CELL = {"rnn": 1, "lstm": 4, "gru": 3}

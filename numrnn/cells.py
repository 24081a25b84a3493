"""One table of facts about the recurrent cells numrnn implements (importable without numpy).

Everything that differs between cells outside the kernels reads this table: the gate width,
the state tensors, the kernels to call and the generation kernels' cell code.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    name: str
    gates: int  # gate blocks: the gate width G is gates * H
    states: tuple  # the recurrent state tensors, in order ("h", then "c" for the LSTM)
    code: int  # the generation kernels' cell code (numrnn.kernels.cpu)
    gate_names: str  # PyTorch's gate order, one letter a block

    @property
    def forward(self):
        return f"{self.name}_forward"

    @property
    def backward(self):
        return f"{self.name}_backward"

    @property
    def has_cell_state(self):
        return "c" in self.states


CELL_TABLE = {
    "rnn": Cell("rnn", gates=1, states=("h",), code=0, gate_names="h"),
    "lstm": Cell("lstm", gates=4, states=("h", "c"), code=1, gate_names="ifgo"),
    "gru": Cell("gru", gates=3, states=("h",), code=2, gate_names="rzn"),
}
CELLS = tuple(CELL_TABLE)
# Gate blocks per cell: the gate width G is this times the hidden size H.
GATES_PER_CELL = {name: cell.gates for name, cell in CELL_TABLE.items()}

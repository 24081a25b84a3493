"""The layers models are assembled from: Embedding, RecurrentStack, Linear, Conditioning.

Each layer declares its parameter entries under a name prefix (PyTorch's state_dict names),
initialises them, allocates its workspace for a (T, B), and runs forward and backward over
the backend's kernels (``numrnn.kernels``). A model's flat parameter buffer is the
concatenation of its layers' entries, in order (``numrnn.model.Network``).

Dimension letters as in the kernels: T time, B batch, V vocabulary, E embedding width,
D input width, H hidden, G gate width, K output width, L layers, N = T*B rows.

Variable-length batches (the masking contract): sequences are left-aligned and right-padded
to T, with ``lengths`` (B) giving each row's real length. The recurrence is causal, so
padding after a row's end never reaches its real steps; whatever reads a row's final state
reads it at the row's length (``RecurrentStack.final_state``) and gradients enter there, so
the padded steps receive exactly zero gradient and change no loss, prediction or gradient.
The reverse direction of a bidirectional stack reads each row's real part backwards
(``reverse_rows``), so it too starts at the row's last real step.
"""

import numpy as np

from numrnn.cells import CELL_TABLE

# The largest layer-0 lookup table (bytes) built from an embedding; above it, the embedding and
# Wx are multiplied instead.
INPUT_TABLE_MAX_BYTES = 64 * 2**20


# Host workspaces start on a cache line: the recurrences' parts write neighbouring runs of
# units of the same rows from different threads, and a line two threads write moves between
# their cores at every step (measured: a B-size LSTM forward 3.7 -> 2.95 ms once aligned).
ALIGN_BYTES = 64


def _aligned_zeros(count, dtype):
    # (count) zeros of dtype whose first element starts on an ALIGN_BYTES boundary
    dtype = np.dtype(dtype)
    raw = np.zeros(count + ALIGN_BYTES // dtype.itemsize, dtype)
    start = (-raw.ctypes.data % ALIGN_BYTES) // dtype.itemsize
    return raw[start : start + count]


def _aligned_count(count, dtype):
    # count rounded up to whole ALIGN_BYTES lines of dtype
    per_line = max(ALIGN_BYTES // np.dtype(dtype).itemsize, 1)
    return -(-count // per_line) * per_line


def _packed_weight_size(H, G, dtype):
    from numrnn.kernels import cpu  # the host's backend; loads numba, as any host pass does

    return max(cpu.packed_weight_size(H, G, dtype), 1)


def allocator(dtype, xp=np):
    """zeros(*shape, zeroed=True): new zeroed arrays of ``dtype`` in ``xp``'s memory (numpy,
    or the device's array module: ``kernels.xp``), the default for workspaces; host arrays
    start on a cache line (ALIGN_BYTES)."""
    if xp is np:
        return lambda *shape, zeroed=True: _aligned_zeros(int(np.prod(shape)), dtype).reshape(shape)
    return lambda *shape, zeroed=True: xp.zeros(shape, dtype=dtype)


class Arena:
    """Workspace buffers as views of one flat buffer that grows to the largest workspace asked
    for. A network whose batches come in many shapes (the translator's (S, T, B)) then holds
    one buffer, not one workspace per shape; ``carve`` zeroes what it hands out, so each
    workspace starts as ``np.zeros`` would, without new pages to fault in, except the buffers
    asked for with ``zeroed=False``: those a pass writes whole before it reads them, which
    keep whatever the last workspace left there (``unzeroed_fill`` fills them instead, for
    tests that prove they are written first). Views of two workspaces overlap: only the
    last one carved may be used."""

    def __init__(self, dtype, unzeroed_fill=None, xp=np):
        self.dtype = np.dtype(dtype)
        self.xp = xp  # the buffer's array module (numpy, or the device's: ``kernels.xp``)
        self.buffer = xp.zeros(0, self.dtype)
        self.unzeroed_fill = unzeroed_fill

    def carve(self, build):
        """build(zeros) -> a workspace, where zeros(*shape, zeroed=True) allocates; returns it
        built from the buffer (grown first if needed), its zeroed arrays zeroed."""
        sizes = {True: 0, False: 0}

        def size(*shape, zeroed=True):
            sizes[zeroed] += _aligned_count(int(np.prod(shape)), self.dtype)
            return np.empty(shape, self.dtype)

        build(size)
        total = sizes[True] + sizes[False]
        if total > self.buffer.size:
            self.buffer = (
                _aligned_zeros(total, self.dtype) if self.xp is np else self.xp.zeros(total, self.dtype)
            )
        else:
            self.buffer[: sizes[True]] = 0.0
        if self.unzeroed_fill is not None:
            self.buffer[sizes[True] : total] = self.unzeroed_fill
        offsets = {True: 0, False: sizes[True]}

        def view(*shape, zeroed=True):
            count = int(np.prod(shape))
            start = offsets[zeroed]
            offsets[zeroed] += _aligned_count(count, self.dtype)  # each view on its own lines
            return self.buffer[start : start + count].reshape(shape)

        return build(view)


def _init_uniform(view, rng, fan_in):
    # PyTorch's default for recurrent and linear layers: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    bound = 1.0 / np.sqrt(fan_in)
    view[...] = rng.uniform(-bound, bound, view.shape)


def active_rows(lengths, T, B):
    """(T,) how many rows each step computes: with rows sorted longest first (non-increasing
    lengths), the rows still running, as packed sequences; otherwise all B. A row past its
    length then holds its state, which the masking contract reads at its length anyway."""
    if lengths is None:
        return np.full(T, B, np.intp)
    lengths = np.asarray(lengths)
    if B > 1 and (lengths[1:] > lengths[:-1]).any():
        return np.full(T, B, np.intp)
    return np.searchsorted(-lengths, -np.arange(T), side="left").astype(np.intp)


def reverse_rows(lengths, T):
    """(T, B) time indices that read each row's first ``lengths[b]`` steps backwards and leave
    its padding in place; applying it twice gives the identity."""
    t = np.arange(T)[:, None]
    lengths = np.asarray(lengths)[None, :]
    return np.where(t < lengths, lengths - 1 - t, t)


def take_rows(a, index):
    """a (T, B, ...) -> a[index[t, b], b] for every t, b: each row's steps reordered (a
    bidirectional stack's reverse direction reads ``reverse_rows``' order); index in a's
    memory (host or device)."""
    return np.take_along_axis(a, index.reshape(index.shape + (1,) * (a.ndim - 2)), axis=0)


# --------------------------------------------------------------------------- embedding


class Embedding:
    """Token ids to the first recurrent layer's input projection ``xg = x @ Wx + bx``.

    ``width`` 0 feeds one-hot vectors: x @ Wx is then the row of Wx for each token, and the
    layer has no parameters. With an embedding, ``embed[token] @ Wx`` takes one of V values,
    so when a (V, G) table of them is read at least V times per build (``uses_table``), it is
    computed once and rows are looked up: the same products, fewer multiplications. Training
    and generation follow this one rule.
    """

    def __init__(self, name, vocab_size, width):
        self.name = name
        self.vocab_size = vocab_size
        self.width = width
        self.weight = f"{name}.weight"

    @property
    def output_width(self):
        return self.width or self.vocab_size

    def entries(self):
        return [(self.weight, (self.vocab_size, self.width))] if self.width else []

    def init(self, views, rng):
        if self.width:
            views[self.weight][...] = rng.standard_normal(views[self.weight].shape)

    def uses_table(self, gate_width, itemsize, reads=None):
        """Whether layer 0 reads a (V, G) table; ``reads``: rows looked up per build of the
        table (None: built once and read for as long as the weights stay)."""
        if not self.width or self.vocab_size * gate_width * itemsize > INPUT_TABLE_MAX_BYTES:
            return False
        return reads is None or self.vocab_size <= reads

    def workspace(self, T, B, G, dtype, zeros=None):
        ws = _EmbeddingWorkspace()
        zeros = zeros or allocator(dtype)
        E, V = self.width, self.vocab_size
        ws.table = self.uses_table(G, np.dtype(dtype).itemsize, reads=T * B)
        ws.lookup = zeros(V, G) if ws.table else None
        ws.dlookup = zeros(V, G) if ws.table else None
        ws.dembed = zeros(V, E) if ws.table else None
        ws.emb = zeros(T * B, E) if E and not ws.table else None
        ws.demb = zeros(T * B, E) if E and not ws.table else None
        return ws

    def project_forward(self, k, w, ws, gate_rows, tokens, Wx, bx):
        # gate_rows (N, G) out = x(tokens) @ Wx + bx; tokens (N); Wx (D, G); bx (G)
        if ws.table:
            k.linear_forward(ws.lookup, w[self.weight], Wx, bx)
            k.embed_forward(gate_rows, tokens, ws.lookup)
        elif self.width:
            k.embed_forward(ws.emb, tokens, w[self.weight])
            k.linear_forward(gate_rows, ws.emb, Wx, bx)
        else:
            k.embed_forward(gate_rows, tokens, Wx)
            k.bias_forward(gate_rows, bx)

    def project_backward(self, k, w, dw, ws, dWx, dbx, dgate_rows, tokens, Wx, scratch):
        # dWx (D, G), dbx (G) and the embedding's gradient += from dgate_rows (N, G)
        if ws.table:
            # Through the table: sum the rows of each token, then the small (V, E) x (E, G)
            # product's backward.
            ws.dlookup[...] = 0.0
            k.embed_backward(ws.dlookup, dgate_rows, tokens)
            k.linear_backward(ws.dembed, dWx, dbx, ws.dlookup, w[self.weight], Wx, scratch)
            dw[self.weight] += ws.dembed
        elif self.width:
            k.linear_backward(ws.demb, dWx, dbx, dgate_rows, ws.emb, Wx, scratch)
            k.embed_backward(dw[self.weight], ws.demb, tokens)
        else:
            k.embed_backward(dWx, dgate_rows, tokens)
            k.bias_backward(dbx, dgate_rows)


class _EmbeddingWorkspace:
    pass


# --------------------------------------------------------------------------- linear


class Linear:
    """y = x @ W + b over rows: ``name.weight`` (D, K) here, (K, D) in PyTorch; ``name.bias``."""

    def __init__(self, name, in_width, out_width):
        self.name = name
        self.in_width = in_width
        self.out_width = out_width
        self.weight = f"{name}.weight"
        self.bias = f"{name}.bias"

    def entries(self):
        return [(self.weight, (self.in_width, self.out_width)), (self.bias, (self.out_width,))]

    def init(self, views, rng):
        for name in (self.weight, self.bias):
            _init_uniform(views[name], rng, self.in_width)

    def forward(self, k, w, y, x):
        # y (N, K) out; x (N, D)
        k.linear_forward(y, x, w[self.weight], w[self.bias])

    def backward(self, k, w, dw, dx, dy, x, scratch):
        # dx (N, D) out (no rows: not wanted); parameter gradients +=; dy (N, K); x (N, D)
        k.linear_backward(dx, dw[self.weight], dw[self.bias], dy, x, w[self.weight], scratch)


# --------------------------------------------------------------------------- attention


class Attention:
    """Each decoder step's context: a softmax-weighted sum of the encoder's outputs (values,
    width D) by how well each matches the step's state (query, width Q), padded source
    positions masked out. Kinds (Luong et al. 2015, Bahdanau et al. 2015):

    - ``dot``: score = q . v (Q must equal D); no parameters;
    - ``general``: score = q . (v W), ``{name}.weight`` (D, Q);
    - ``additive``: score = w . tanh(v K + q U), ``{name}.key`` (D, Q), ``{name}.query`` (Q, Q),
      ``{name}.v`` (Q).

    Batch-major (B, T, ...) throughout: per row, the scores of all T steps are one GEMM.
    """

    KINDS = ("dot", "general", "additive")

    def __init__(self, name, kind, query_width, value_width):
        if kind not in self.KINDS:
            raise ValueError(f"attention must be one of {', '.join(self.KINDS)}, not {kind!r}")
        if kind == "dot" and query_width != value_width:
            raise ValueError(
                f"dot attention needs the decoder's width ({query_width}) to equal the encoder "
                f"outputs' ({value_width}); use general or additive"
            )
        self.name = name
        self.kind = kind
        self.query_width = query_width
        self.value_width = value_width
        self.weight = f"{name}.weight"
        self.key = f"{name}.key"
        self.query = f"{name}.query"
        self.v = f"{name}.v"

    def entries(self):
        Q, D = self.query_width, self.value_width
        if self.kind == "general":
            return [(self.weight, (D, Q))]
        if self.kind == "additive":
            return [(self.key, (D, Q)), (self.query, (Q, Q)), (self.v, (Q,))]
        return []

    def init(self, views, rng):
        for name, shape in self.entries():
            _init_uniform(views[name], rng, shape[0])

    def workspace(self, B, T, S, dtype, zeros=None, backward=True, group=1):
        """Buffers for B rows of T queries over S positions, each group of ``group`` rows
        reading one source (B / group of them); without ``backward``, only what the forward
        pass needs (step decoding)."""
        ws = _AttentionWorkspace()
        zeros = zeros or allocator(dtype)
        Q, D = self.query_width, self.value_width
        ws.weights = zeros(B, T, S)
        ws.context = zeros(B, T, D)
        ws.keys = zeros(B // group, S, Q) if self.kind != "dot" else None  # dot: the values are the keys
        ws.projected_queries = zeros(B, T, Q) if self.kind == "additive" else None
        if backward:
            ws.dscores = zeros(B, T, S)
            ws.dvalues = zeros(B, S, D)
            ws.dqueries = zeros(B, T, Q)
            ws.dkeys = zeros(B, S, Q)
            ws.dprojected_values = zeros(B, S, D) if self.kind != "dot" else None
            ws.dprojected_queries = zeros(B, T, Q) if self.kind == "additive" else None
        return ws

    def _rows(self, a):
        return a.reshape(-1, a.shape[-1])

    def forward(self, k, w, ws, queries, values, lengths):
        """ws.context (B, T, D) and ws.weights (B, T, S) from queries (B, T, Q) and values
        (B, S, D), both contiguous; lengths (B): real source positions per row."""
        self.keys(k, w, ws, values)
        self.attend(k, w, ws, queries, values, lengths)

    def keys(self, k, w, ws, values):
        """ws.keys from values (B, S, D): what every step compares its query with (once per
        source when decoding step by step)."""
        if self.kind == "general":
            k.matmul(self._rows(ws.keys), self._rows(values), w[self.weight])
        elif self.kind == "additive":
            k.matmul(self._rows(ws.keys), self._rows(values), w[self.key])

    def attend(self, k, w, ws, queries, values, lengths, group=1):
        """forward's scores, softmax and context, the keys already in ws (``keys``); each
        ``group`` consecutive query rows read one row of values and keys (a beam's
        hypotheses share their source); lengths per query row."""
        if self.kind == "dot":
            k.attention_scores(ws.weights, queries, values, group)
        elif self.kind == "general":
            k.attention_scores(ws.weights, queries, ws.keys, group)
        else:
            k.matmul(self._rows(ws.projected_queries), self._rows(queries), w[self.query])
            k.additive_scores(ws.weights, ws.projected_queries, ws.keys, w[self.v], group)
        k.attention_softmax(ws.weights, lengths)
        k.attention_context(ws.context, ws.weights, values, group)

    def backward(self, k, w, dw, ws, dcontext, queries, values, scratch):
        """Parameter gradients (+=), and ws.dqueries (B, T, Q) and ws.dvalues (B, S, D) (=)
        from dcontext (B, T, D); scratch: at least 2 * D * Q and 2 * Q * Q elements."""
        k.attention_context_backward(ws.dscores, ws.dvalues, dcontext, ws.weights, values)
        rows = self._rows
        if self.kind == "dot":
            k.attention_scores_backward(ws.dqueries, ws.dkeys, ws.dscores, queries, values)
            ws.dvalues += ws.dkeys
            return
        if self.kind == "general":
            k.attention_scores_backward(ws.dqueries, ws.dkeys, ws.dscores, queries, ws.keys)
            k.matmul_backward(
                rows(ws.dprojected_values),
                dw[self.weight],
                rows(ws.dkeys),
                rows(values),
                w[self.weight],
                scratch,
            )
            ws.dvalues += ws.dprojected_values
            return
        k.additive_scores_backward(
            ws.dprojected_queries, ws.dkeys, dw[self.v], ws.dscores, ws.projected_queries, ws.keys, w[self.v]
        )
        k.matmul_backward(
            rows(ws.dprojected_values), dw[self.key], rows(ws.dkeys), rows(values), w[self.key], scratch
        )
        ws.dvalues += ws.dprojected_values
        k.matmul_backward(
            rows(ws.dqueries),
            dw[self.query],
            rows(ws.dprojected_queries),
            rows(queries),
            w[self.query],
            scratch,
        )


class _AttentionWorkspace:
    pass


# --------------------------------------------------------------------------- conditioning


class Conditioning:
    """Per-label parameters that condition a recurrent stack on a label (one row per label).

    ``mode`` "state": the initial state is a learnt row per label, ``{name}.h0`` (C, L, H)
    (and ``{name}.c0`` for the LSTM); "input": a learnt row ``{name}.input`` (C, G) is added
    to layer 0's gate pre-activations at every step (a per-label input bias, through the
    stack's ``input_gates``/``input_dgates`` hooks); "both": all of them. Gradients scatter-add
    into the rows of each batch row's label.
    """

    def __init__(self, name, mode, classes, stack):
        if mode not in ("state", "input", "both"):
            raise ValueError(f"conditioning mode must be state, input or both, not {mode!r}")
        self.name = name
        self.mode = mode
        self.classes = classes
        self.layers = stack.layers * stack.directions
        self.hidden = stack.hidden
        self.gate_width = stack.gate_width
        self.states = stack.cell.states  # ("h",) or ("h", "c")
        self.uses_state = mode in ("state", "both")
        self.uses_input = mode in ("input", "both")
        self.state_names = {state: f"{name}.{state}0" for state in self.states}
        self.input = f"{name}.input"

    def entries(self):
        entries = []
        if self.uses_state:
            entries += [
                (self.state_names[state], (self.classes, self.layers, self.hidden)) for state in self.states
            ]
        if self.uses_input:
            entries.append((self.input, (self.classes, self.gate_width)))
        return entries

    def init(self, views, rng):
        # The scale of a recurrent layer's bias: U(-1/sqrt(H), 1/sqrt(H)).
        for name, _ in self.entries():
            _init_uniform(views[name], rng, self.hidden)

    def initial_state(self, k, w, labels, dtype):
        """{"h": (L, B, H), ...}: each row's label's learnt initial state (a copy)."""
        return {
            state: k.xp.ascontiguousarray(w[name][labels].transpose(1, 0, 2), dtype=dtype)
            for state, name in self.state_names.items()
        }

    def state_backward(self, k, dw, labels, dstate):
        # cond.h0[labels[b]] += dstate["h"][:, b] (and c), rows of one label summed
        B = labels.shape[0]
        for state, name in self.state_names.items():
            table = dw[name].reshape(self.classes, -1)
            rows = k.xp.ascontiguousarray(dstate[state].transpose(1, 0, 2)).reshape(B, -1)
            k.embed_backward(table, rows, labels)

    def input_gates(self, w, labels):
        """The stack's ``input_gates`` hook: adds each row's label row to its gates."""
        rows = w[self.input][labels]  # (B, G)

        def add(gate_rows, reverse):
            # gate_rows (T*B, G), row t*B + b belongs to batch row b
            gate_rows.reshape(-1, *rows.shape)[...] += rows

        return add

    def input_dgates(self, k, dw, labels):
        """The stack's ``input_dgates`` hook: the input rows' gradient, summed over time."""

        def accumulate(dgate_rows, reverse):
            B = labels.shape[0]
            k.embed_backward(dw[self.input], dgate_rows.reshape(-1, B, self.gate_width).sum(axis=0), labels)

        return accumulate


# --------------------------------------------------------------------------- recurrent stack


class RecurrentStack:
    """L recurrent layers (one cell kind), optionally bidirectional, dropout between layers.

    Parameters per layer and direction under PyTorch's names: ``{name}.weight_ih_l{k}`` (D, G),
    ``weight_hh_l{k}`` (H, G), ``bias_ih_l{k}``, ``bias_hh_l{k}``, with ``_reverse`` for the
    second direction. Layer 0's input projection comes from ``embedding`` (token input).
    States are (L * directions, B, H), layer-major as in PyTorch.
    """

    def __init__(self, name, cell, embedding, hidden, layers, *, dropout=0.0, bidirectional=False):
        self.name = name
        self.cell = CELL_TABLE[cell]
        self.embedding = embedding
        self.hidden = hidden
        self.layers = layers
        self.dropout = dropout
        self.directions = 2 if bidirectional else 1
        self.gate_width = self.cell.gates * hidden
        # (Wx, Wh, bx, bh) names per (layer, direction), looked up at every pass.
        self._name_table = {
            (layer, d): self._make_names(layer, d) for layer in range(layers) for d in range(self.directions)
        }

    @property
    def output_width(self):
        return self.directions * self.hidden

    def input_width(self, layer):
        return self.output_width if layer else self.embedding.output_width

    def _names(self, layer, direction):
        return self._name_table[(layer, direction)]

    def _make_names(self, layer, direction):
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        return tuple(
            f"{self.name}.{kind}{suffix}" for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        )

    def entries(self):
        entries = []
        G, H = self.gate_width, self.hidden
        for layer in range(self.layers):
            for direction in range(self.directions):
                Wx, Wh, bx, bh = self._names(layer, direction)
                entries += [(Wx, (self.input_width(layer), G)), (Wh, (H, G)), (bx, (G,)), (bh, (G,))]
        return entries

    def init(self, views, rng):
        for name, _ in self.entries():
            _init_uniform(views[name], rng, self.hidden)

    def zero_state(self, batch, dtype, xp=np):
        """Zeros for every state tensor: {"h": (L*dirs, B, H)} (and "c" for the LSTM), in
        ``xp``'s memory."""
        shape = (self.layers * self.directions, batch, self.hidden)
        return {name: xp.zeros(shape, dtype) for name in self.cell.states}

    # ------------------------------------------------------------------ workspace

    def workspace(self, T, B, dtype, scratch=0, zeros=None, backward=True, every_row=False, xp=np):
        """Buffers for one (T, B) in ``xp``'s memory; ``scratch``: elements the caller's own
        kernels need there too; ``zeros(*shape, zeroed=True)``: the allocator (default
        ``allocator(dtype, xp)``; an ``Arena``'s views);
        without ``backward``, only what the forward pass needs (step decoding: no dropout);
        every_row: the passes run every row at every step (no lengths), so they write the
        per-step buffers whole and these need not be zeroed (``Arena``)."""
        ws = _StackWorkspace()
        ws.xp = xp
        zeros = zeros or allocator(dtype, xp)
        steps = (lambda *shape: zeros(*shape, zeroed=False)) if every_row else zeros
        L, R, H, G = self.layers, self.directions, self.hidden, self.gate_width
        lstm, gru = self.cell.name == "lstm", self.cell.name == "gru"
        units = [(layer, d) for layer in range(L) for d in range(R)]
        ws.T, ws.B = T, B
        # One per direction: each keeps its own embedded rows for the backward pass.
        ws.embedding = [self.embedding.workspace(T, B, G, dtype, zeros) for _ in range(R)]
        ws.gates = {u: steps(T, B, G) for u in units}
        ws.hs = {u: steps(T + 1, B, H) for u in units}
        ws.cs = {u: steps(T + 1, B, H) for u in units} if lstm else None
        ws.hn = {u: steps(T, B, H) for u in units} if gru else None
        W = self.output_width
        # Layer l >= 1 reads the outputs of layer l-1, both directions side by side (in time
        # order), after dropout.
        ws.outputs = [zeros(T, B, W) for _ in range(L - 1)] if R > 1 else None
        ws.dropped = [zeros(T, B, W) for _ in range(L - 1)] if self.dropout and backward else None
        ws.masks = [zeros(T, B, W) for _ in range(L - 1)] if self.dropout and backward else None
        ws.zero_bh = zeros(B, H)
        ws.hw = zeros(B, G)
        # The recurrences' copy of Wh in the layout their products read: the CPU's panels
        # (written before they are read), nothing on a GPU, whose products read Wh as it is.
        ws.packed = zeros(_packed_weight_size(H, G, dtype) if xp is np else 1, zeroed=False)
        ws.used_dropout = False
        ws.reverse = None
        ws.tokens = None
        if not backward:
            ws.scratch = zeros(max(scratch, 1))
            return ws
        ws.dinputs = zeros(T, B, W) if R > 1 else None
        ws.dgates = steps(T, B, G)
        ws.dhg = steps(T, B, G) if gru else None
        # dhs[d]: the gradient reaching direction d's outputs of the layer being differentiated
        # (the top layer's are filled by the caller), in that direction's own time order.
        ws.dhs = [steps(T, B, H) for _ in range(R)]
        ws.dh0 = zeros(L * R, B, H)
        ws.dc0 = zeros(L * R, B, H)
        D0 = self.input_width(0)
        # A stacked LSTM layer's two weight gradients are one product (stacked_weight_grads):
        # its rows [x_t | h_{t-1}] on the CPU, nothing on a GPU. Layer 1 stacks if any does.
        stacked = self._stacks_weight_grads(1)
        ws.joined = zeros(T * B * (W + H) if xp is np else 1, zeroed=False) if stacked else None
        ws.no_weight_grad = xp.empty((0, G), dtype) if stacked else None
        ws.no_bias_grad = xp.empty(0, dtype) if stacked else None
        joined_scratch = 2 * (W + H + 1) * G if stacked else 0
        # The largest kernel workspace: a weight gradient's two (D, G) or (H, G) partial
        # products (cpu._weight_grad_tn; the caller's own products', also twice theirs), the
        # stacked layers' (W + H, G) ones, or a cell backward's (B, H) per-step product.
        ws.scratch = zeros(max(2 * max(D0 * G, W * G, H * G, scratch), joined_scratch, H * B, 1))
        return ws

    def _stacks_weight_grads(self, layer):
        # Whether ``layer``'s input and recurrent weight gradients are one product: a stacked
        # LSTM layer (an RNN's measured level; a GRU's n gate has two gradients) in one direction.
        return self.cell.name == "lstm" and self.directions == 1 and 0 < layer < self.layers

    # ------------------------------------------------------------------ forward

    def forward(
        self, k, w, ws, tokens, state, *, lengths=None, use_dropout=False, rng=None, input_gates=None
    ):
        """Run every layer over tokens (T, B) from ``state`` (a dict like zero_state's).

        lengths (B): each row's real length; None means every row is T long. A bidirectional
        stack needs it (the reverse direction starts at each row's end); with rows sorted
        longest first, each step also computes only the rows still running (``active_rows``).
        input_gates(gate_rows, reverse): called after layer 0's input projection, to add to
        it (conditioning); ``reverse`` says whether the rows are in reversed time.
        """
        tokens = k.to_device(tokens, np.intp)  # (host: no copy)
        T, B = tokens.shape
        R, xp = self.directions, ws.xp
        ws.used_dropout = use_dropout
        ws.active = active_rows(lengths, T, B)  # on the host: the kernels' launchers loop over it
        ws.reverse = k.to_device(reverse_rows(T if lengths is None else lengths, T)) if R > 1 else None
        flat = tokens.reshape(-1)
        ws.tokens = (
            [flat] if R == 1 else [flat, xp.ascontiguousarray(take_rows(tokens, ws.reverse)).reshape(-1)]
        )
        for layer in range(self.layers):
            x = None if layer == 0 else self.layer_input(ws, layer)
            for d in range(R):
                self._project_forward(k, w, ws, layer, d, x)
                if layer == 0 and input_gates is not None:
                    input_gates(ws.gates[(0, d)].reshape(T * B, self.gate_width), bool(d))
                self._recur_forward(k, w, ws, layer, d, state)
            if R > 1 and layer < self.layers - 1:
                out = ws.outputs[layer]
                H = self.hidden
                out[:, :, :H] = ws.hs[(layer, 0)][1:]
                out[:, :, H:] = take_rows(ws.hs[(layer, 1)][1:], ws.reverse)
            if use_dropout and layer < self.layers - 1:
                keep = 1.0 - self.dropout
                mask = ws.masks[layer]
                # Drawn on the host from the run's generator (the CPU's masks on every device).
                mask[...] = k.to_device((rng.random(mask.shape) < keep) / keep)  # (CPU: no copy)
                np.multiply(self._raw_output(ws, layer), mask, out=ws.dropped[layer])

    def _raw_output(self, ws, layer):
        # (T, B, dirs*H): the outputs of ``layer`` in time order, before dropout
        return ws.outputs[layer] if self.directions > 1 else ws.hs[(layer, 0)][1:]

    def layer_input(self, ws, layer):
        """The (T, B, dirs*H) input of layer >= 1: the layer below's outputs, after dropout."""
        if ws.used_dropout:
            return ws.dropped[layer - 1]
        return self._raw_output(ws, layer - 1)

    def _project_forward(self, k, w, ws, layer, d, x):
        T, B = ws.T, ws.B
        Wx, _, bx, _ = (w[name] for name in self._names(layer, d))
        gate_rows = ws.gates[(layer, d)].reshape(T * B, self.gate_width)
        if layer == 0:
            self.embedding.project_forward(k, w, ws.embedding[d], gate_rows, ws.tokens[d], Wx, bx)
            return
        if d:
            x = take_rows(x, ws.reverse)
        k.linear_forward(gate_rows, x.reshape(T * B, x.shape[2]), Wx, bx)

    def _recur_forward(self, k, w, ws, layer, d, state):
        _, Wh, _, bh = (w[name] for name in self._names(layer, d))
        unit, index = (layer, d), layer * self.directions + d
        hs, gates = ws.hs[unit], ws.gates[unit]
        hs[0] = state["h"][index]
        cell = self.cell.name
        if cell == "rnn":
            k.rnn_forward(hs, gates, ws.active, Wh, bh, ws.hw, ws.packed)
        elif cell == "lstm":
            ws.cs[unit][0] = state["c"][index]
            k.lstm_forward(hs, ws.cs[unit], gates, ws.active, Wh, bh, ws.hw, ws.packed)
        else:
            k.gru_forward(hs, gates, ws.hn[unit], ws.active, Wh, bh, ws.hw, ws.packed)

    def top_outputs(self, ws, direction=0):
        """(T, B, H): the top layer's outputs in one direction (its own time order)."""
        return ws.hs[(self.layers - 1, direction)][1:]

    def final_state(self, ws, lengths=None):
        """Every state tensor after each row's last real step: {"h": (L*dirs, B, H), ...}."""
        T, B, xp = ws.T, ws.B, ws.xp
        if lengths is not None:
            steps, rows = xp.asarray(np.asarray(lengths)), xp.arange(B)
        final = {}
        for name, buffers in (("h", ws.hs), ("c", ws.cs)):
            if buffers is None:
                continue
            final[name] = xp.stack(
                [
                    buffers[(layer, d)][steps, rows] if lengths is not None else buffers[(layer, d)][T]
                    for layer in range(self.layers)
                    for d in range(self.directions)
                ]
            )
        return final

    # ------------------------------------------------------------------ backward

    def backward(self, k, w, dw, ws, dstate=None, *, input_dgates=None, state_grad=True):
        """Backpropagate from ``ws.dhs`` (the top layer's output gradients, filled by the
        caller) and ``dstate`` (the gradient reaching the final states, or None) to every
        parameter (accumulated) and the initial state, returned like zero_state's dict;
        with ``state_grad`` False the initial state's gradient is skipped (None returned).

        input_dgates(dgate_rows, reverse): called with layer 0's gate gradients before the
        input projection's backward (the conditioning's gradient).
        """
        T, B, H = ws.T, ws.B, self.hidden
        R, G = self.directions, self.gate_width
        dgate_rows = ws.dgates.reshape(T * B, G)
        for layer in reversed(range(self.layers)):
            x = None if layer == 0 else self.layer_input(ws, layer)
            if R > 1 and layer > 0:
                ws.dinputs[...] = 0.0
            stacked = self._stacks_weight_grads(layer)
            for d in range(R):
                self._recur_backward(k, w, dw, ws, layer, d, dstate, state_grad, not stacked)
                Wx, _, _, _ = (w[name] for name in self._names(layer, d))
                dWx, dWh, dbx, dbh = (dw[name] for name in self._names(layer, d))
                if stacked:
                    k.stacked_weight_grads(
                        dWx, dbx, dWh, dbh, x, ws.hs[(layer, d)], ws.dgates, ws.scratch, ws.joined
                    )
                    dWx, dbx = ws.no_weight_grad, ws.no_bias_grad
                if layer == 0:
                    if input_dgates is not None:
                        input_dgates(dgate_rows, bool(d))
                    self.embedding.project_backward(
                        k, w, dw, ws.embedding[d], dWx, dbx, dgate_rows, ws.tokens[d], Wx, ws.scratch
                    )
                elif R == 1:
                    # dhs now becomes the gradient of the layer below's outputs.
                    k.linear_backward(
                        ws.dhs[0].reshape(T * B, H), dWx, dbx, dgate_rows, x.reshape(T * B, H), Wx, ws.scratch
                    )
                else:
                    self._project_backward_bidirectional(k, ws, d, x, Wx, dWx, dbx, dgate_rows)
            if layer == 0:
                break
            if R == 1:
                if ws.used_dropout:
                    ws.dhs[0] *= ws.masks[layer - 1]
                continue
            if ws.used_dropout:
                ws.dinputs *= ws.masks[layer - 1]
            ws.dhs[0][...] = ws.dinputs[:, :, :H]
            ws.dhs[1][...] = take_rows(ws.dinputs[:, :, H:], ws.reverse)
        if not state_grad:
            return None
        state = {"h": ws.dh0.copy()}
        if self.cell.has_cell_state:
            state["c"] = ws.dc0.copy()
        return state

    def _project_backward_bidirectional(self, k, ws, d, x, Wx, dWx, dbx, dgate_rows):
        T, B = ws.T, ws.B
        W = self.output_width
        if d:
            x = take_rows(x, ws.reverse)
        dx = ws.xp.empty((T, B, W), dtype=ws.dinputs.dtype)
        k.linear_backward(
            dx.reshape(T * B, W),
            dWx,
            dbx,
            dgate_rows,
            ws.xp.ascontiguousarray(x).reshape(T * B, W),
            Wx,
            ws.scratch,
        )
        ws.dinputs += take_rows(dx, ws.reverse) if d else dx

    def _recur_backward(self, k, w, dw, ws, layer, d, dstate, state_grad, weight_grad=True):
        # without weight_grad the caller adds dWh and dbh itself (stacked_weight_grads)
        _, Wh, _, _ = (w[name] for name in self._names(layer, d))
        _, dWh, _, dbh = (dw[name] for name in self._names(layer, d))
        if not weight_grad:
            dWh, dbh = ws.no_weight_grad, ws.no_bias_grad
        unit, index = (layer, d), layer * self.directions + d
        dhT = ws.zero_bh if dstate is None else ws.xp.ascontiguousarray(dstate["h"][index], ws.hw.dtype)
        hs, dhs = ws.hs[unit], ws.dhs[d]
        cell = self.cell.name
        if cell == "rnn":
            k.rnn_backward(
                ws.dgates,
                ws.dh0[index],
                dWh,
                dbh,
                dhs,
                dhT,
                hs,
                ws.active,
                state_grad,
                Wh,
                ws.scratch,
                ws.packed,
            )
        elif cell == "lstm":
            dcT = ws.zero_bh if dstate is None else ws.xp.ascontiguousarray(dstate["c"][index], ws.hw.dtype)
            k.lstm_backward(
                ws.dgates,
                ws.dh0[index],
                ws.dc0[index],
                dWh,
                dbh,
                dhs,
                dhT,
                dcT,
                hs,
                ws.cs[unit],
                ws.gates[unit],
                ws.active,
                state_grad,
                Wh,
                ws.scratch,
                ws.packed,
            )
        else:
            k.gru_backward(
                ws.dgates,
                ws.dh0[index],
                dWh,
                dbh,
                dhs,
                dhT,
                hs,
                ws.gates[unit],
                ws.hn[unit],
                ws.active,
                state_grad,
                Wh,
                ws.dhg,
                ws.scratch,
                ws.packed,
            )


class _StackWorkspace:
    pass

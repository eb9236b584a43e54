"""The transformer rows of bench.parallel (`--model gpt`): one GPT split five ways over the
ranks, with the bytes each rank sends per training step counted at the transport next to
the Megatron formulas, the parameters each rank holds and the activations it keeps.

Notation: b = batch per data-parallel group (global batch / dp), s = sequence length,
h = model width, L = layers, t = tp, d = dp; A = 4*b*s*h bytes (one float32 activation
of the residual stream); P = parameters on this rank. Ring algorithms throughout, so an
all-reduce of n bytes sends 2(k-1)/k * n per rank and an all-gather or reduce-scatter
(k-1)/k * n (n: the full, gathered size).

  data parallel (DDP over d):       2(d-1)/d * 4P
  tensor parallel (Megatron):       (8L + 4) * (t-1)/t * A
      forward: 1 all-reduce after the vocabulary-parallel embedding, 2 per block (after the
      row-parallel attention and MLP projections); backward: 2 per block (into the
      column-parallel QKV and MLP inputs) and 1 into the output head's input: 4L + 2
      all-reduces of A, each (t-1)/t*A twice over.
    + vocabulary-parallel cross-entropy: all-reduces of b*s maxima and 2*b*s sums:
      2(t-1)/t * 12*b*s
  tensor + sequence parallel:       the same (8L + 4) * (t-1)/t * A: every all-reduce
      becomes a reduce-scatter plus an all-gather (Korthikanti et al. 2022), and the
      embedding's backward gains the all-gather that the sequence split needs;
    + the cross-entropy term above
    + the position embedding gradient all-gathered: (t-1)/t * 4*s*h
    + the replicated LayerNorm weights and row-parallel biases of the sequence-split
      regions, gradients summed: (6L + 2) * 2(t-1)/t * 4h

Activations: bytes allocated during the forward pass that are still held when it ends
(what backward needs), measured with tracemalloc on each rank (NumPy reports its buffers
to it): run under mpirun, one process per rank. Sequence parallelism divides the
LayerNorm, dropout and residual activations by t; our column-parallel layers keep their
all-gathered input for the weight gradient (Megatron re-gathers it in backward instead),
so the saving here is smaller than the paper's 34/t.
"""
import tracemalloc

import numpy as np

import nn
from bench.common import interleaved, slowest_median
from collectives.observe import ByteCounter
from nn.parallel import DistributedDataParallel, ParallelGPT, ProcessGrid

LAYOUTS = {"data parallel": (1, False), "tensor parallel": (0, False), "tensor + sequence": (0, True),
           "hybrid": (2, False), "hybrid + sequence": (2, True)}     # tp 0: all ranks


def add_arguments(parser):
    """The flags of `--model gpt`."""
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128, help="sequence length")
    parser.add_argument("--vocab", type=int, default=512)


def predicted_bytes(tp, dp, sequence_parallel, args, params):
    """The Megatron formulas of the module docstring, in bytes sent per rank per step."""
    b, s, h, layers = args.batch // dp, args.seq, args.dim, args.layers
    activation = 4 * b * s * h
    sent = 2 * (dp - 1) / dp * 4 * params
    sent += (8 * layers + 4) * (tp - 1) / tp * activation + 2 * (tp - 1) / tp * 12 * b * s
    if sequence_parallel:
        sent += (tp - 1) / tp * 4 * s * h + (6 * layers + 2) * 2 * (tp - 1) / tp * 4 * h
    return sent


def setup(comm, tp, sequence_parallel, args):
    """(grid, model, step) for one layout; byte counting on its communicators."""
    grid = ProcessGrid(comm, tp=tp)
    if args.batch % grid.dp_size:
        raise SystemExit(f"--batch {args.batch} must divide by dp={grid.dp_size}")
    config = nn.GPTConfig(vocab_size=args.vocab, block_size=args.seq, n_layer=args.layers, n_head=args.heads,
                          n_embd=args.dim, activation="gelu_tanh")
    nn.manual_seed(0)
    model = DistributedDataParallel(ParallelGPT(config, grid.tp, sequence_parallel, algorithm="ring"), grid.dp,
                                    algorithm="ring")
    for sub in (grid.tp, grid.dp):
        sub.add_observer(ByteCounter())
    optimizer = nn.optim.SGD(model.parameters(), lr=1e-3)
    rows = np.random.default_rng(grid.dp_rank).integers(0, args.vocab, (args.batch // grid.dp_size, args.seq + 1))

    def step():
        optimizer.zero_grad()
        model(rows[:, :-1], rows[:, 1:]).backward()
        optimizer.step()

    def forward_memory():
        """Bytes the forward pass leaves allocated (the activations kept for backward)."""
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        loss = model(rows[:, :-1], rows[:, 1:])
        kept = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        del loss
        return kept
    return grid, model, step, forward_memory


def sent_per_step(grid, step):
    """Bytes this rank sends in one step (after a warm-up step)."""
    step()
    before = grid.tp.transport.sent + grid.dp.transport.sent
    step()
    return grid.tp.transport.sent + grid.dp.transport.sent - before


def run(args, comm, say):
    """Count, measure and time every layout that fits the world; print one line each."""
    layouts = {name: (tp or comm.size, sp) for name, (tp, sp) in LAYOUTS.items()}
    layouts = {name: (tp, sp) for name, (tp, sp) in layouts.items() if comm.size % tp == 0
               and not (sp and (tp == 1 or args.seq % tp))}
    setups = {name: setup(comm, tp, sp, args) for name, (tp, sp) in layouts.items()}
    say(f"# bench.parallel --model gpt: {comm.size} ranks; GPT {args.layers} layers, {args.heads} heads, "
        f"dim {args.dim}, sequence {args.seq}, vocabulary {args.vocab}; global batch {args.batch}; float32; ring")
    sent = {name: sent_per_step(grid, step) for name, (grid, _m, step, _f) in setups.items()}
    memory = {name: forward() for name, (_g, _m, _s, forward) in setups.items()}
    timed = interleaved(comm, {name: entry[2] for name, entry in setups.items()}, args.rounds, args.steps,
                        warmup=False)
    everyone = comm.allgather_object({name: ([t for t, _ in timed[name]], sent[name], memory[name])
                                                for name in setups})
    say(f"{'layout':>18} {'tp':>3} {'dp':>3} {'step ms':>9} {'params/rank':>12} {'activ. MB':>10} "
        f"{'sent MB/step':>13} {'predicted':>10}")
    for name, (grid, model, _step, _forward) in setups.items():
        params = sum(p.size for p in model.module.parameters())
        median = slowest_median(rank[name][0] for rank in everyone)
        predicted = predicted_bytes(grid.tp_size, grid.dp_size, layouts[name][1], args, params)
        say(f"{name:>18} {grid.tp_size:>3} {grid.dp_size:>3} {1e3 * median:>9.1f} {params:>12,} "
            f"{everyone[0][name][2] / 1e6:>10.2f} {everyone[0][name][1] / 1e6:>13.3f} {predicted / 1e6:>10.3f}")
    say("# activ. MB: forward-pass allocations still held at its end (rank 0, tracemalloc); sent: bytes rank 0 "
        "sent in one training step; predicted: the formulas in bench/parallel_gpt.py")

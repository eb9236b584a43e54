"""mpirun -n 4 python -m bench.parallel [--dim 512] [--hidden 2048] [--blocks 4] [--batch 64] [--model gpt]

One model, three ways to split it over the ranks: pure data parallel (tp=1), pure tensor
parallel (tp=n) and the hybrid (tp=2). The model is `--blocks` ParallelMLP blocks
(dim -> hidden -> dim, GELU); data parallelism is DistributedDataParallel over the grid's
dp communicator. For each: the step time (slowest rank, median, interleaved rounds), the
parameter bytes each rank holds, and the bytes each rank sent in one step, counted at
the transport, next to what the ring formulas predict:

  data parallel:   all-reduce of the rank's gradients over dp ranks: 2(dp-1)/dp * 4 * params
  tensor parallel: per block one all-reduce of the (batch/dp, dim) activations forward and
                   one of their gradients backward (none into the first block, whose input
                   needs no gradient): 2(tp-1)/tp * 4 * batch/dp * dim each
All collectives use the ring algorithm here, so that the formulas are exact.
--model gpt gives the transformer rows instead (data, tensor, tensor + sequence parallel,
hybrid): see bench/parallel_gpt.py for them and their formulas.
"""
import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")     # ranks share cores (see bench.ddp)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import nn  # noqa: E402
from bench import parallel_gpt, parallel_moe  # noqa: E402
from bench.common import interleaved, slowest_median, start  # noqa: E402
from collectives.observe import ByteCounter  # noqa: E402
from nn import functional as F  # noqa: E402
from nn.parallel import DistributedDataParallel, ParallelMLP, ProcessGrid  # noqa: E402


def build(grid, args):
    nn.manual_seed(0)
    blocks = [ParallelMLP(args.dim, args.hidden, grid.tp, algorithm="ring") for _ in range(args.blocks)]
    return DistributedDataParallel(nn.Sequential(*blocks), grid.dp, algorithm="ring")


def predicted_bytes(grid, args, params):
    dp, tp = grid.dp_size, grid.tp_size
    data = 2 * (dp - 1) / dp * 4 * params
    activation = 4 * (args.batch // dp) * args.dim
    tensor = (2 * args.blocks - 1) * 2 * (tp - 1) / tp * activation
    return data + tensor


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64, help="global batch")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", choices=("mlp", "gpt"), default="mlp",
                        help="mlp: ParallelMLP blocks; gpt: the transformer rows (bench/parallel_gpt.py)")
    parallel_gpt.add_arguments(parser)
    return parser


def setup(comm, tp, args):
    """(grid, model, step function) for one layout, with byte counting on its communicators."""
    grid = ProcessGrid(comm, tp=tp)
    if args.batch % grid.dp_size:
        raise SystemExit(f"--batch {args.batch} must divide by dp={grid.dp_size}")
    model = build(grid, args)
    for sub in (grid.tp, grid.dp):
        sub.add_observer(ByteCounter())
    optimizer = nn.optim.SGD(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(grid.dp_rank)
    x = rng.standard_normal((args.batch // grid.dp_size, args.dim)).astype(np.float32)
    target = nn.Tensor(rng.standard_normal(x.shape).astype(np.float32))

    def step():
        optimizer.zero_grad()
        F.mse_loss(model(nn.Tensor(x)), target).backward()
        optimizer.step()
    return grid, model, step


def bytes_per_step(grid, step):
    """Bytes this rank sends in one step (after a warm-up step)."""
    step()
    before = grid.tp.transport.sent + grid.dp.transport.sent
    step()
    return grid.tp.transport.sent + grid.dp.transport.sent - before


def main(argv=None):
    """Time and count every layout that divides the world; print one line per layout."""
    args, comm, say = start(build_parser(), argv)
    if args.model == "gpt":
        return parallel_gpt.run(args, comm, say)
    layouts = {"data parallel": 1, "hybrid": 2, "tensor parallel": comm.size}
    setups = {name: setup(comm, tp, args) for name, tp in layouts.items() if comm.size % tp == 0}
    say(f"# bench.parallel: {comm.size} ranks; {args.blocks} x ParallelMLP({args.dim}, {args.hidden}); "
        f"global batch {args.batch}; float32; ring all-reduce")
    sent = {name: bytes_per_step(grid, step) for name, (grid, _model, step) in setups.items()}
    experts = parallel_moe.measure(comm, args)
    steps = {name: step for name, (_, _, step) in setups.items()}
    timed = interleaved(comm, {**steps, "expert parallel": experts[0]}, args.rounds, args.steps,
                        warmup=False)
    slowest = comm.allgather_object({name: [t for t, _ in timed[name]] for name in timed})
    say(f"{'layout':>16} {'tp':>3} {'dp':>3} {'step ms':>9} {'params/rank':>12} {'MB/rank':>8} "
        f"{'sent MB/step':>13} {'predicted':>10}")
    for name, (grid, model, _step) in setups.items():
        params = sum(p.size for p in model.module.parameters())
        median = slowest_median(rank[name] for rank in slowest)
        sent_all = comm.allgather_object(sent[name])
        say(f"{name:>16} {grid.tp_size:>3} {grid.dp_size:>3} {1e3 * median:>9.1f} {params:>12,} "
            f"{4 * params / 1e6:>8.2f} {sent_all[0] / 1e6:>13.3f} {predicted_bytes(grid, args, params) / 1e6:>10.3f}")
    params, sent_moe, predicted_moe = comm.allgather_object(experts[1:])[0]
    median = slowest_median(rank["expert parallel"] for rank in slowest)
    say(f"{'expert parallel':>16} {'-':>3} {'-':>3} {1e3 * median:>9.1f} {params:>12,} {4 * params / 1e6:>8.2f} "
        f"{sent_moe / 1e6:>13.3f} {predicted_moe / 1e6:>10.3f}")
    say("# MB/rank: parameter memory per rank; sent: bytes rank 0 sent in one training step")
    say(f"# expert parallel: one MixtureOfExperts({args.dim}, {args.hidden}, {2 * comm.size} experts), "
        f"2 per rank, top-1 (bench/parallel_moe.py)")


if __name__ == "__main__":
    main()

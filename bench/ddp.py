"""mpirun -n 4 python -m bench.ddp [--hidden 1536] [--layers 4] [--batch 32] [--steps 4] [--rounds 3]

Data-parallel training step of an MLP big enough that gradient communication matters:
step time with overlap (bucket all-reduces launched during backward) and without,
how long the end of backward waited for communication, how much of the communication
ran hidden behind backward, a sweep over bucket sizes, and, when PyTorch is installed,
PyTorch's DistributedDataParallel (gloo backend) on the same model and batch in the same
run. Configurations are interleaved round by round; the table shows medians.
"""
import argparse
import os
import statistics
import time

# Ranks share the cores: one BLAS thread per rank, or the ranks' BLAS pools thrash the
# cores (measured here: 4 ranks on 2 cores ran 4-5x slower with OpenBLAS's default).
# Must be set before NumPy loads its BLAS; an explicit setting in the environment wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import nn  # noqa: E402
from bench.common import interleaved, slowest_median, start  # noqa: E402
from nn import functional as F  # noqa: E402
from nn.parallel import DistributedDataParallel  # noqa: E402


def build(features, hidden, layers, classes=10, seed=0):
    nn.manual_seed(seed)
    modules, width = [], features
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*modules, nn.Linear(width, classes))


def ours(comm, args, overlap, bucket_mb):
    model = DistributedDataParallel(build(args.features, args.hidden, args.layers), comm,
                                    bucket_cap_mb=bucket_mb, overlap=overlap, algorithm=args.algorithm)
    optimizer = nn.optim.SGD(model.parameters(), lr=0.01)
    rng = np.random.default_rng(comm.rank)
    x = rng.standard_normal((args.batch, args.features)).astype(np.float32)
    y = rng.integers(0, 10, args.batch)

    def step():
        optimizer.zero_grad()
        F.cross_entropy(model(nn.Tensor(x)), y).backward()
        optimizer.step()
        return dict(model.last_step)
    return step, model


def pytorch(comm, args, reference):
    """PyTorch DDP (gloo) on the same weights and batch, or None without PyTorch."""
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        return None
    if not dist.is_initialized():
        port = comm.broadcast_object(29500 + (int(time.time()) % 1000) if comm.rank == 0 else None)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=comm.rank,
                                world_size=comm.size)
    torch.set_num_threads(1)
    layers, width = [], args.features
    for _ in range(args.layers):
        layers += [torch.nn.Linear(width, args.hidden), torch.nn.ReLU()]
        width = args.hidden
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 10))
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in reference.state_dict().items()})
    model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    rng = np.random.default_rng(comm.rank)
    x = torch.from_numpy(rng.standard_normal((args.batch, args.features)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 10, args.batch))

    def step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        return {}
    return step


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--features", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32, help="per-rank batch")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per configuration and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--buckets", default="1,5,25,100", help="bucket caps in MB for the sweep")
    parser.add_argument("--algorithm", default="auto")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch row")
    return parser


def contenders(comm, args, say):
    """{configuration name: step function}, ours at every bucket cap with and without overlap
    (and PyTorch's DDP where installed), and our model (its weights are everyone's start)."""
    configs = {}
    for mb in map(float, args.buckets.split(",")):
        configs[f"overlap, {mb:g} MB buckets"] = ours(comm, args, True, mb)
    configs["no overlap, 25 MB buckets"] = ours(comm, args, False, 25)
    reference = configs[next(iter(configs))][1].module
    steps = {name: step for name, (step, _) in configs.items()}
    if not args.no_torch:
        torch_step = pytorch(comm, args, reference)
        if torch_step is not None:
            steps["PyTorch DDP (gloo), 25 MB"] = torch_step
        else:
            say("# PyTorch is not installed: no PyTorch DDP row")
    return steps, reference


def main(argv=None):
    """Time every configuration, interleaved, and print the table of medians."""
    args, comm, say = start(build_parser(), argv)
    steps, reference = contenders(comm, args, say)
    params = sum(p.size for p in reference.parameters())
    say(f"# bench.ddp: {comm.size} ranks, MLP {args.features}-{'-'.join([str(args.hidden)] * args.layers)}-10 "
        f"({params / 1e6:.1f} M float32 parameters, {4 * params / 1e6:.0f} MB of gradients), batch "
        f"{args.batch} per rank, {args.rounds} rounds x {args.steps} steps, interleaved")
    timed = interleaved(comm, steps, args.rounds, args.steps,
                        after_round=lambda index: say(f"# round {index + 1}/{args.rounds} done"))
    samples = {name: [dict(info, step=seconds) for seconds, info in timed[name]] for name in steps}
    step_times = {name: [s["step"] for s in samples[name]] for name in steps}
    slowest = comm.allgather_object(step_times)
    say(f"{'configuration':>30} {'step ms':>9} {'wait ms':>9} {'comm ms':>9} {'hidden':>7} {'buckets':>8}")
    medians = {}
    for name in steps:
        medians[name] = slowest_median(rank[name] for rank in slowest)
        say(format_row(name, medians[name], samples[name]))
    best = min((n for n in medians if n.startswith("overlap")), key=medians.get)
    say(f"# overlap speed-up: {best} is {medians['no overlap, 25 MB buckets'] / medians[best]:.2f}x "
        f"faster than no overlap (step time, slowest rank, median)")
    say("# wait = time from the end of backward until every bucket's all-reduce finished (rank 0); "
        "hidden = share of communication time before backward ended")


def format_row(name, median, mine):
    """One configuration's line: step time (slowest rank), and this rank's wait, communication
    time, share hidden behind backward and bucket count (blank for PyTorch's row)."""
    if "wait" not in mine[0]:
        return f"{name:>30} {1e3 * median:>9.1f} {'':>9} {'':>9} {'':>7} {'':>8}"
    wait = statistics.median(s["wait"] for s in mine)
    communication = statistics.median(s["communication"] for s in mine)
    hidden = statistics.median(s["hidden"] / s["communication"] for s in mine if s["communication"])
    return (f"{name:>30} {1e3 * median:>9.1f} {1e3 * wait:>9.1f} {1e3 * communication:>9.1f} "
            f"{100 * hidden:>6.0f}% {mine[0]['buckets']:>8}")


if __name__ == "__main__":
    main()

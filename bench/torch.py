"""mpirun -n 4 python -m bench.torch [--hidden 1024] [--layers 3] [--steps 4] [--rounds 3]
                                    [-b 4K -e 16M -f 4] [--iters 10]

PyTorch's own DistributedDataParallel and dist.all_reduce on each available backend, in
one interleaved run: "collectives" (this engine through collectives.pytorch), "gloo",
and "nccl" on a machine with one GPU per rank. Also the engine called directly (no
torch layer) on the all-reduce sizes, to show what the backend layer costs.

Table 1: DDP training step of an MLP (forward, backward with the gradient all-reduces,
SGD step), median of the slowest rank, and its speed-up over gloo; also the same step
without communication (DDP's no_sync), the floor any backend's step stands on, and
DDP's gradient bucket sizes. Its CPU column is the CPU time a step takes, all ranks'
threads together (median per rank, summed), and "CPU / cores" that time spread over the
cores this node offers the job: no schedule finishes a step faster where ranks share
cores (one host). Every backend runs with the same torch threads per rank
(OMP_NUM_THREADS, default 1 here: 4 ranks share 2 cores). Table 2: per size,
dist.all_reduce time and busbw = algbw * 2(n-1)/n (nccl-tests' factor) per backend, the
speed-up over gloo, and whether every result was exact. Contenders take turns round by
round (bench.common.interleaved), so machine noise hits all alike, in an order rotated
every round, so that no one always follows gloo. Run it with -m (a
file named torch.py run as a script would shadow PyTorch).
"""
import argparse
import contextlib
import os
import resource
import statistics
import types

os.environ.setdefault("OMP_NUM_THREADS", "1")   # ranks share the cores: one thread each

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import collectives.pytorch  # noqa: E402,F401  (backend "collectives"; rendezvous from MPI)
from bench.common import human, interleaved, parse_size, rank0_printer, size_sweep, slowest_median  # noqa: E402


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[3])
    parser.add_argument("--features", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32, help="per-rank batch")
    parser.add_argument("--steps", type=int, default=4, help="timed DDP steps per backend and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-b", "--minbytes", type=parse_size, default=parse_size("4K"))
    parser.add_argument("-e", "--maxbytes", type=parse_size, default=parse_size("16M"))
    parser.add_argument("-f", "--stepfactor", type=int, default=4)
    parser.add_argument("--iters", type=int, default=10, help="timed all-reduces per backend, size and round")
    parser.add_argument("--no-ddp", action="store_true", help="all-reduce table only")
    parser.add_argument("--no-allreduce", action="store_true", help="DDP table only")
    return parser


def backends():
    """{name: process group} for every backend available here, "gloo" first (the baseline)."""
    groups = {"gloo": dist.new_group(backend="gloo"), "collectives": dist.group.WORLD}
    if torch.cuda.is_available() and torch.cuda.device_count() >= int(os.environ.get("LOCAL_WORLD_SIZE", 1)):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        groups["nccl"] = dist.new_group(backend="nccl")
    return groups


def device_of(name):
    return torch.device("cuda") if name == "nccl" else torch.device("cpu")


def mlp(args, device):
    torch.manual_seed(0)
    layers, width = [], args.features
    for _ in range(args.layers):
        layers += [torch.nn.Linear(width, args.hidden), torch.nn.ReLU()]
        width = args.hidden
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, 10)).to(device)


def ddp_step(args, group, device, communicate=True):
    """One DDP training step on `group` as a function of no arguments; with communicate
    False the same step under DDP's no_sync() (no gradient all-reduce: the compute alone).
    The step function's `model` attribute is the DDP model."""
    model = torch.nn.parallel.DistributedDataParallel(mlp(args, device), process_group=group)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(dist.get_rank())
    x = torch.randn(args.batch, args.features, generator=g).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(device)

    def step():
        optimizer.zero_grad()
        with contextlib.nullcontext() if communicate else model.no_sync():
            torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    step.model = model
    return step


def cpu_seconds():
    """CPU time this process has used so far, all its threads (user and system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def with_cpu(step):
    """`step` returning the CPU seconds its process (every thread: the backend's too)
    used while it ran."""
    def run():
        start = cpu_seconds()
        step()
        return cpu_seconds() - start
    run.model = step.model
    return run


def cpu_per_step(timed):
    """{name: CPU seconds per step of all ranks together}: each rank's median, summed."""
    mine = {name: statistics.median(used for _, used in samples) for name, samples in timed.items()}
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    return {name: sum(rank[name] for rank in gathered) for name in mine}


def cores_for_the_job():
    """Cores this process may run on (what the ranks of one host share)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def bucket_sizes(model):
    """The byte sizes of DDP's gradient buckets, in all-reduce order (after its first
    step, when DDP has rebuilt them in the order gradients became ready)."""
    logged = model._get_ddp_logging_data()
    sizes = logged.get("rebuilt_bucket_sizes") or logged.get("bucket_sizes") or ""
    return [int(size) for size in str(sizes).split(",") if size.strip()]


def allreduce_step(group, nbytes, device, iters, engine=None):
    """`iters` all-reduces of nbytes of float32 on `group` (or on the engine's own
    Communicator `engine`); returns whether the last result was exact."""
    n, r = dist.get_world_size(), dist.get_rank()
    count = max(1, nbytes // 4)
    base = (torch.arange(count, device=device) % 7).float()
    x = torch.empty_like(base)
    expected = base * n + n * (n - 1) / 2

    def step():
        for _ in range(iters):
            x.copy_(base + r)       # small integers: the sum is exact in any order
            if engine is None:
                dist.all_reduce(x, group=group)
            else:
                engine.allreduce(x.numpy())
        if device.type == "cuda":
            torch.cuda.synchronize()
        return bool(torch.equal(x, expected))
    return step


def rotated_interleaved(barrier, steps, rounds, repeats):
    """bench.common.interleaved with the contenders' order rotated round by round: a turn
    right after gloo's pays for what gloo leaves behind (the same engine call measured
    1.3x slower in that place), so each contender takes that place equally often (every
    place once when rounds = number of contenders)."""
    names = list(steps)
    samples = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        order = names[shift:] + names[:shift]
        timed = interleaved(barrier, {name: steps[name] for name in order}, 1, repeats, warmup=index == 0)
        for name in names:
            samples[name] += timed[name]
    return samples


def medians(timed, per_call=1):
    """{name: median seconds of the slowest rank per call}, and whether every rank's results were exact."""
    times = {name: [seconds / per_call for seconds, _ in samples] for name, samples in timed.items()}
    exact = all(ok is not False for samples in timed.values() for _, ok in samples)
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (times, exact))
    return ({name: slowest_median(rank[0][name] for rank in gathered) for name in times},
            all(rank[1] for rank in gathered))


COMPUTE_ONLY = "no all-reduce"


def ddp_table(args, groups, say, barrier):
    """DDP step time per backend, and the same step without communication (DDP's no_sync)."""
    steps = {name: ddp_step(args, group, device_of(name)) for name, group in groups.items()}
    steps[COMPUTE_ONLY] = ddp_step(args, groups["gloo"], torch.device("cpu"), communicate=False)
    params = sum(p.numel() for p in mlp(args, "cpu").parameters())
    say(f"# DDP step: MLP {args.features}-{'-'.join([str(args.hidden)] * args.layers)}-10, {params / 1e6:.2f} M "
        f"float32 parameters ({4 * params / 2**20:.1f} MiB of gradients), batch {args.batch} per rank, "
        f"{args.rounds} rounds x {args.steps} steps, interleaved; {torch.get_num_threads()} torch thread(s) "
        f"per rank for every backend; '{COMPUTE_ONLY}': the step under DDP's no_sync (compute alone)")
    timed = rotated_interleaved(barrier, {name: with_cpu(step) for name, step in steps.items()},
                                args.rounds, args.steps)
    step_time, _ = medians({name: [(seconds, None) for seconds, _ in samples] for name, samples in timed.items()})
    cpu, cores = cpu_per_step(timed), cores_for_the_job()
    say(f"# DDP's gradient buckets (bytes, in all-reduce order): "
        f"{', '.join(map(str, bucket_sizes(steps['collectives'].model)))}")
    say(f"# CPU ms: CPU time per step, all {dist.get_world_size()} ranks together; "
        f"/ cores: spread over the {cores} core(s) here")
    say(f"{'backend':>14} {'step ms':>9} {'vs gloo':>8} {'CPU ms':>8} {'/ cores':>8}")
    for name, seconds in step_time.items():
        say(f"{name:>14} {1e3 * seconds:9.2f} {step_time['gloo'] / seconds:7.2f}x "
            f"{1e3 * cpu[name]:8.1f} {1e3 * cpu[name] / cores:8.1f}")


def allreduce_table(args, groups, say, barrier):
    n = dist.get_world_size()
    engine = dist.group.WORLD.comm
    names = list(groups) + ["engine direct"]
    say(f"# dist.all_reduce, float32 sum, {args.iters} calls per turn, {args.rounds} rounds; "
        "busbw in GB/s; speed-up = gloo time / this time")
    say(f"{'size':>10} " + " ".join(f"{name + ' us':>16} {'busbw':>6} {'vs gloo':>7}" for name in names)
        + f" {'exact':>6}")
    for nbytes in size_sweep(args.minbytes, args.maxbytes, args.stepfactor, smallest=4):
        steps = {name: allreduce_step(group, nbytes, device_of(name), args.iters) for name, group in groups.items()}
        steps["engine direct"] = allreduce_step(None, nbytes, torch.device("cpu"), args.iters, engine)
        seconds, exact = medians(rotated_interleaved(barrier, steps, args.rounds, 1), per_call=args.iters)
        busbw = {name: 2 * (n - 1) / n * nbytes / t / 1e9 for name, t in seconds.items()}
        say(f"{human(nbytes):>10} " + " ".join(f"{1e6 * seconds[name]:16.1f} {busbw[name]:6.2f} "
                                              f"{seconds['gloo'] / seconds[name]:6.2f}x" for name in names)
            + f" {'yes' if exact else 'NO':>6}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    dist.init_process_group("collectives")
    say = rank0_printer(dist.get_rank())
    groups = backends()
    barrier = types.SimpleNamespace(barrier=dist.barrier)   # what interleaved() calls between turns
    say(f"# bench.torch: {dist.get_world_size()} ranks, backends {', '.join(groups)} (PyTorch {torch.__version__})")
    if not args.no_ddp:
        ddp_table(args, groups, say, barrier)
    if not args.no_allreduce:
        allreduce_table(args, groups, say, barrier)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

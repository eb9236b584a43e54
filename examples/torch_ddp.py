"""The digits MLP trained with stock PyTorch DistributedDataParallel, on the backend you
name: this engine ("collectives"), gloo, or NCCL (GPU machines).

    mpirun -n 4 python examples/torch_ddp.py --backend collectives [--epochs 20]
    mpirun -n 4 python examples/torch_ddp.py --backend gloo
    mpirun -n 4 python examples/torch_ddp.py --backend nccl        # one GPU per rank

The script is ordinary PyTorch: `import collectives.pytorch` registers the backend and
fills RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT in from MPI, so nothing is set by
hand and the same lines run every backend. --batch-size is the global batch, split
evenly over the ranks (DistributedSampler). Rank 0 prints loss and test accuracy per
epoch, then the median training-step time (forward, backward with the gradient
all-reduces, optimizer step) of the slowest rank.
"""
import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")   # ranks share the cores: one thread each

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_digits import HIDDEN, load_data  # noqa: E402

import collectives.pytorch  # noqa: E402,F401  (backend "collectives"; rendezvous from MPI)


def build_model(seed, hidden=HIDDEN):
    """64 -> hidden -> hidden -> 10 MLP with ReLU (the nn example's shape, PyTorch's init)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(),
                               torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                               torch.nn.Linear(hidden, 10))


def accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="collectives", choices=["collectives", "gloo", "nccl"])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch size")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--algorithm", default=None,
                        help="backend 'collectives' only: all-reduce algorithm (default auto)")
    return parser.parse_args(argv)


def setup(args):
    """Join the process group; returns the device this rank trains on."""
    options = {"algorithm": {"allreduce": args.algorithm}} if args.algorithm else None
    if args.backend == "nccl":
        if not torch.cuda.is_available():
            raise SystemExit("--backend nccl needs CUDA GPUs (this PyTorch sees none)")
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group(args.backend, pg_options=options if args.backend == "collectives" else None)
    return device


def main(argv=None):
    args = parse(argv)
    device = setup(args)
    rank, size = dist.get_rank(), dist.get_world_size()
    say = print if rank == 0 else (lambda *a, **k: None)
    if args.batch_size % size:
        raise SystemExit(f"--batch-size {args.batch_size} must be divisible by the {size} ranks")
    x_train, y_train, x_test, y_test = (torch.from_numpy(a).to(device) for a in load_data(args.seed))
    model = DistributedDataParallel(build_model(args.seed).to(device))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    sampler = torch.utils.data.DistributedSampler(range(len(x_train)), size, rank, shuffle=True,
                                                  seed=args.seed, drop_last=True)
    say(f"PyTorch DDP, backend {args.backend}: {size} ranks, global batch {args.batch_size} "
        f"({args.batch_size // size} per rank), digits MLP 64-{HIDDEN}-{HIDDEN}-10")
    step_times = []
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler))
        for start in range(0, len(order) - args.batch_size // size + 1, args.batch_size // size):
            batch = order[start:start + args.batch_size // size]
            begin = time.perf_counter()
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            step_times.append(time.perf_counter() - begin)
        say(f"epoch {epoch + 1:3d}  last loss {loss.item():.4f}  "
            f"test accuracy {100 * accuracy(model.module, x_test, y_test):.2f}%")
    slowest = [None] * size
    dist.all_gather_object(slowest, step_times)
    median_ms = 1e3 * statistics.median(max(times[i] for times in slowest) for i in range(len(step_times)))
    say(f"final test accuracy {100 * accuracy(model.module, x_test, y_test):.2f}% with backend "
        f"{args.backend}; median step {median_ms:.2f} ms (slowest rank) over {len(step_times)} steps")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

"""The digits MLP with its hidden layers split over ranks (tensor parallel) and the
batch split over the rest (data parallel).

    mpirun -n 4 python examples/train_digits_tp.py --tp 2 [--epochs 30] [--batch-size 32]

With --tp 2 on 4 ranks: ranks {0, 1} and {2, 3} each hold half of every hidden weight
(column-parallel 64->128, row-parallel 128->128), and the two groups each train on half of
every global batch, averaging gradients with DistributedDataParallel over grid.dp. The
weights start as exact slices of the single-process model's (same seed), so the run
takes the same steps as `python examples/train_digits.py`, up to rounding.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_digits import HIDDEN, evaluate, load_data  # noqa: E402

import collectives as cc  # noqa: E402
import nn  # noqa: E402
from nn import functional as F  # noqa: E402
from nn.parallel import (  # noqa: E402
    ColumnParallelLinear,
    DistributedDataParallel,
    DistributedSampler,
    ProcessGrid,
    RowParallelLinear,
)


def build_parallel_model(grid, seed=0, hidden=HIDDEN):
    """64 -> hidden -> hidden -> 10 like train_digits.build_model, the two hidden layers
    split over grid.tp; draws the same weights as the single-process model from `seed`."""
    nn.manual_seed(seed)
    return nn.Sequential(ColumnParallelLinear(64, hidden, grid.tp), nn.ReLU(),
                         RowParallelLinear(hidden, hidden, grid.tp), nn.ReLU(),
                         nn.Linear(hidden, 10))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tp", type=int, default=2, help="ranks per tensor-parallel group")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch size")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    comm = cc.init()
    say = print if comm.rank == 0 else (lambda *a, **k: None)
    grid = ProcessGrid(comm, tp=args.tp)
    if args.batch_size % grid.dp_size:
        raise SystemExit(f"--batch-size must divide by the {grid.dp_size} data-parallel groups")
    x_train, y_train, x_test, y_test = load_data(args.seed)
    model = DistributedDataParallel(build_parallel_model(grid, args.seed), grid.dp)
    optimizer = nn.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    sampler = DistributedSampler(len(x_train), grid.dp, seed=args.seed, drop_last=True)
    local = model.module
    params = sum(p.size for p in local.parameters())
    say(f"digits MLP, tensor parallel over {grid.tp_size} x data parallel over {grid.dp_size}: "
        f"{params} parameters per rank")
    start = time.perf_counter()
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        epoch_start, total, count = time.perf_counter(), 0.0, 0
        for batch in sampler.batches(args.batch_size // grid.dp_size):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(nn.Tensor(x_train[batch])), y_train[batch])
            loss.backward()
            optimizer.step()
            total, count = total + loss.item(), count + 1
        mean_loss = comm.allreduce(np.array([total / max(count, 1)]), "avg")[0]
        test_loss, accuracy = evaluate(local, x_test, y_test)
        say(f"epoch {epoch + 1:3d}  train loss {mean_loss:.4f}  test loss {test_loss:.4f}  "
            f"test accuracy {100 * accuracy:.2f}%  ({time.perf_counter() - epoch_start:.2f} s)")
    _, accuracy = evaluate(local, x_test, y_test)
    say(f"final test accuracy {100 * accuracy:.2f}% in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()

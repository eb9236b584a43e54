"""The digits classifier with a mixture-of-experts layer whose experts are sharded over
the ranks (expert parallelism), each rank training on its share of every global batch.

    mpirun -n 4 python examples/train_digits_moe.py [--experts 8] [--epochs 30] [--batch-size 32]

Model: 64 -> 128 (ReLU) -> h + MoE(h) -> ReLU -> 10, the MoE of `--experts` MLPs
(128 -> 128 -> 128), top-1 routed by a learned gate, each rank holding experts/n of them.
Tokens (here: images) travel to their expert's rank by all-to-all and back by a second
one; backward runs the conjugate all-to-alls. The replicated parameters (first layer,
gate, head) have their gradients summed over the ranks after backward; each rank's loss
is its summed cross-entropy over the global batch size, so the gradients are those of
the global batch's mean loss, as in single-process training.
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
from nn.parallel import DistributedSampler  # noqa: E402
from nn.parallel.moe import MixtureOfExperts  # noqa: E402


class DigitsMoE(nn.Module):
    """64 -> hidden, a residual mixture of experts, -> 10."""

    def __init__(self, comm, experts, seed=0, hidden=HIDDEN):
        super().__init__()
        nn.manual_seed(seed)
        self.fc1 = nn.Linear(64, hidden)
        self.moe = MixtureOfExperts(hidden, hidden, experts, comm=comm, seed=seed)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        return self.head(F.relu(h + self.moe(h)))

    def replicated_parameters(self):
        """Parameters every rank holds alike (all but the experts)."""
        return [*self.fc1.parameters(), *self.moe.replicated_parameters(), *self.head.parameters()]


def sum_gradients(parameters, comm):
    """Sum the replicated parameters' gradients over the ranks (one all-reduce each)."""
    for p in parameters:
        p.grad = comm.allreduce(np.ascontiguousarray(p.grad), "sum")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch size")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    comm = cc.init()
    say = print if comm.rank == 0 else (lambda *a, **k: None)
    if args.batch_size % comm.size:
        raise SystemExit(f"--batch-size must divide by the {comm.size} ranks")
    x_train, y_train, x_test, y_test = load_data(args.seed)
    model = DigitsMoE(comm, args.experts, args.seed)
    optimizer = nn.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    sampler = DistributedSampler(len(x_train), comm, seed=args.seed, drop_last=True)
    say(f"digits MoE: {args.experts} experts over {comm.size} ranks "
        f"({len(model.moe.local)} here), global batch {args.batch_size}")
    start = time.perf_counter()
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        epoch_start, total, count = time.perf_counter(), 0.0, 0
        for batch in sampler.batches(args.batch_size // comm.size):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(nn.Tensor(x_train[batch])), y_train[batch], reduction="sum")
            (loss / args.batch_size).backward()
            sum_gradients(model.replicated_parameters(), comm)
            optimizer.step()
            total, count = total + loss.item(), count + len(batch)
        mean_loss = comm.allreduce(np.array([total, count], np.float64))
        test_loss, accuracy = evaluate(model, x_test, y_test)
        say(f"epoch {epoch + 1:3d}  train loss {mean_loss[0] / mean_loss[1]:.4f}  test loss {test_loss:.4f}  "
            f"test accuracy {100 * accuracy:.2f}%  ({time.perf_counter() - epoch_start:.2f} s)")
    _, accuracy = evaluate(model, x_test, y_test)
    say(f"final test accuracy {100 * accuracy:.2f}% in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()

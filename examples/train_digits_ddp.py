"""Data-parallel training of the digits MLP: each rank trains on its share of every
global batch, and gradients are averaged by bucketed all-reduces during backward.

    mpirun -n 4 python examples/train_digits_ddp.py [--epochs 30] [--batch-size 32]
           [--checkpoint digits_ddp.npz] [--checkpoint-every 20] [--resume]

--batch-size is the GLOBAL batch (split evenly over the ranks), so the run takes the same
steps as `python examples/train_digits.py` with that batch size. Progress is printed on
rank 0 only. With --checkpoint, rank 0 saves model, optimizer, sampler position and step
every --checkpoint-every steps; --resume continues from that file and ends with the same
weights, bit for bit, as a run that never stopped (the last line prints their digest).
--die-at-step N makes rank 1 kill itself (SIGKILL) at step N, to try exactly that.
"""
import argparse
import hashlib
import os
import signal
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_digits import build_model, evaluate, load_data, save_plot  # noqa: E402

import collectives as cc  # noqa: E402
import nn  # noqa: E402
from nn import functional as F  # noqa: E402
from nn.parallel import DistributedDataParallel, DistributedSampler, load_checkpoint, save_checkpoint  # noqa: E402


def weights_digest(module):
    """A short hash of every weight, to compare runs bit for bit."""
    digest = hashlib.sha256()
    for name, value in module.state_dict().items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()[:16]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch size")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--algorithm", default="auto", help="all-reduce algorithm for the gradients")
    parser.add_argument("--bucket-cap-mb", type=float, default=25)
    parser.add_argument("--checkpoint", default="", help="checkpoint file ('' for none)")
    parser.add_argument("--checkpoint-every", type=int, default=20, help="steps between checkpoints")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    parser.add_argument("--die-at-step", type=int, default=0, help="fault injection: rank 1 SIGKILLs itself")
    parser.add_argument("--plot", default="", help="PNG of loss and accuracy (rank 0)")
    args = parser.parse_args(argv)

    comm = cc.init()
    say = print if comm.rank == 0 else (lambda *a, **k: None)
    if args.batch_size % comm.size:
        raise SystemExit(f"--batch-size {args.batch_size} must be divisible by the {comm.size} ranks")
    local_batch = args.batch_size // comm.size
    x_train, y_train, x_test, y_test = load_data(args.seed)
    model = DistributedDataParallel(build_model(args.seed), comm, bucket_cap_mb=args.bucket_cap_mb,
                                    algorithm=args.algorithm)
    optimizer = nn.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    sampler = DistributedSampler(len(x_train), comm, shuffle=True, seed=args.seed, drop_last=True)
    step = 0
    if args.resume and args.checkpoint and os.path.exists(args.checkpoint):
        step = load_checkpoint(args.checkpoint, model, optimizer, sampler)
        say(f"resumed from {args.checkpoint} at step {step} (epoch {sampler.epoch + 1})")
    say(f"data-parallel digits MLP: {comm.size} ranks, global batch {args.batch_size} "
        f"({local_batch} per rank), {len(model.buckets)} gradient bucket(s), algorithm {args.algorithm}")
    history, start = [], time.perf_counter()
    for epoch in range(sampler.epoch, args.epochs):
        sampler.set_epoch(epoch)
        epoch_start, total, count = time.perf_counter(), 0.0, 0
        for batch in sampler.batches(local_batch):
            if len(batch) < local_batch:
                break
            if args.die_at_step and step + 1 == args.die_at_step and comm.rank == 1:
                os.kill(os.getpid(), signal.SIGKILL)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(nn.Tensor(x_train[batch])), y_train[batch])
            loss.backward()
            optimizer.step()
            step += 1
            total, count = total + loss.item(), count + 1
            if args.checkpoint and step % args.checkpoint_every == 0:
                save_checkpoint(args.checkpoint, model, optimizer, sampler, step=step)
        mean_loss = comm.allreduce(np.array([total / max(count, 1)]), "avg")[0]
        test_loss, accuracy = evaluate(model.module, x_test, y_test)
        history.append({"epoch": epoch + 1, "train_loss": mean_loss, "test_loss": test_loss,
                        "test_accuracy": accuracy})
        say(f"epoch {epoch + 1:3d}  step {step:5d}  train loss {mean_loss:.4f}  test loss {test_loss:.4f}  "
            f"test accuracy {100 * accuracy:.2f}%  ({time.perf_counter() - epoch_start:.2f} s)")
    _, accuracy = evaluate(model.module, x_test, y_test)
    say(f"final test accuracy {100 * accuracy:.2f}% after {step} steps in {time.perf_counter() - start:.1f} s; "
        f"weights digest {weights_digest(model.module)}")
    if args.plot and comm.rank == 0 and history:
        save_plot(history, args.plot, title=f"digits MLP, data parallel over {comm.size} ranks")


if __name__ == "__main__":
    main()

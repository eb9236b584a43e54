"""python -m bench.mlp [--batch 128] [--repeats 15] [--steps 5] [--warmup 1]

The cost of the autograd library: one training step (forward, backward, SGD) of a
784-1024-1024-10 ReLU MLP in float32, through `nn`, against the same step written by
hand in plain NumPy, interleaved in one run (median of the repeats). Both start from the
same weights and batch; the first step's losses are printed side by side as a check.

Each round runs `--warmup` untimed steps of a contender before timing its `--steps`.
Why: `nn` keeps every parameter's gradient until optimizer.step(), while the hand-written
step frees each layer's gradient right after its update, so `nn`'s peak memory is a few
MiB higher. While the NumPy step runs, glibc returns that memory to the OS, and the
first `nn` step after the switch pays to fault it back in (+35% on that step, measured;
it disappears with MALLOC_TRIM_THRESHOLD_/MALLOC_MMAP_THRESHOLD_ set high). A training
loop never switches, so the warm-up step keeps that switching cost out of the ratio;
`--warmup 0` shows it.
"""
import argparse
import statistics
import time

import numpy as np

import nn
from nn import functional as F

SIZES = (784, 1024, 1024, 10)


def make_batch(batch, seed=0):
    """A float32 input batch and integer class targets."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, SIZES[0])).astype(np.float32), rng.integers(0, SIZES[-1], batch)


def library_model(seed=0):
    """The MLP as nn.Sequential of Linear and ReLU layers, initialised from `seed`."""
    nn.manual_seed(seed)
    layers = []
    for i in range(len(SIZES) - 1):
        layers.append(nn.Linear(SIZES[i], SIZES[i + 1]))
        if i < len(SIZES) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def library_step(model, optimizer, x, y):
    """One training step through nn; returns the loss."""
    optimizer.zero_grad()
    loss = F.cross_entropy(model(nn.Tensor(x)), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def numpy_step(weights, x, y, lr):
    """The same step by hand: weights is [(W, b), ...], updated in place."""
    activations, pre = [x], []
    for i, (w, b) in enumerate(weights):
        z = activations[-1] @ w.T + b
        pre.append(z)
        activations.append(np.maximum(z, 0) if i < len(weights) - 1 else z)
    logits = activations[-1]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(y))
    loss = -log_probs[rows, y].mean()
    grad = np.exp(log_probs)
    grad[rows, y] -= 1
    grad /= len(y)
    for i in reversed(range(len(weights))):
        w, b = weights[i]
        grad_w, grad_b = grad.T @ activations[i], grad.sum(axis=0)
        if i > 0:
            grad = (grad @ w) * (pre[i - 1] > 0)
        w -= lr * grad_w
        b -= lr * grad_b
    return float(loss)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds of each")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per round before timing")
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args(argv)
    x, y = make_batch(args.batch)
    model = library_model()
    optimizer = nn.optim.SGD(model.parameters(), lr=args.lr)
    weights = [(layer.weight.data.copy(), layer.bias.data.copy()) for layer in model if isinstance(layer, nn.Linear)]
    first = (library_step(model, optimizer, x, y), numpy_step(weights, x, y, args.lr))
    print(f"# MLP {'-'.join(map(str, SIZES))}, batch {args.batch}, float32, SGD; "
          f"first-step loss: nn {first[0]:.6f}, numpy {first[1]:.6f}")
    print(f"# {args.repeats} interleaved rounds of {args.warmup} untimed + {args.steps} timed steps each")
    times = {"nn": [], "numpy": []}
    steps = {"nn": lambda: library_step(model, optimizer, x, y),
             "numpy": lambda: numpy_step(weights, x, y, args.lr)}
    for _ in range(args.repeats):
        for name, step in steps.items():
            for _ in range(args.warmup):
                step()
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - start) / args.steps)
    library, plain = statistics.median(times["nn"]), statistics.median(times["numpy"])
    ratios = sorted(a / b for a, b in zip(times["nn"], times["numpy"]))
    print(f"{'':>14} {'median ms/step':>15} {'min':>8} {'max':>8}")
    for name in ("nn", "numpy"):
        print(f"{name:>14} {1e3 * statistics.median(times[name]):>15.2f} {1e3 * min(times[name]):>8.2f} "
              f"{1e3 * max(times[name]):>8.2f}")
    print(f"overhead of nn over hand-written NumPy: {100 * (library / plain - 1):+.1f}% "
          f"(median of per-round ratios {100 * (statistics.median(ratios) - 1):+.1f}%)")


if __name__ == "__main__":
    main()

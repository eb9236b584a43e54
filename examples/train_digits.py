"""Train an MLP on scikit-learn's bundled handwritten digits (8x8 images, no download).

    python examples/train_digits.py [--epochs 30] [--batch-size 32] [--lr 0.05] [--plot digits.png]

Prints loss and accuracy per epoch and saves a loss/accuracy plot when matplotlib is
installed (`pip install -e '.[examples]'`). The data, model and evaluation helpers are
shared with the data- and tensor-parallel versions of this example.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import nn  # noqa: E402
from nn import functional as F  # noqa: E402

HIDDEN = 128


def load_data(seed=0, test_fraction=0.25):
    """(x_train, y_train, x_test, y_test): pixels scaled to [0, 1] as float32, a fixed
    shuffled split."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    split = int(len(x) * (1 - test_fraction))
    train, test = order[:split], order[split:]
    return x[train], y[train], x[test], y[test]


def build_model(seed=0, hidden=HIDDEN, dtype=np.float32):
    """64 -> hidden -> hidden -> 10 MLP with ReLU, initialised from `seed`."""
    nn.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, hidden, dtype=dtype), nn.ReLU(),
                         nn.Linear(hidden, hidden, dtype=dtype), nn.ReLU(),
                         nn.Linear(hidden, 10, dtype=dtype))


def evaluate(model, x, y):
    """(mean cross-entropy, accuracy) of `model` on (x, y), without recording a graph."""
    with nn.no_grad():
        logits = model(nn.Tensor(x))
        loss = F.cross_entropy(logits, y).item()
    return loss, float((logits.data.argmax(axis=1) == y).mean())


def save_plot(history, path, title="digits MLP"):
    """Loss and test accuracy per epoch as a PNG (skipped with a note without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -e '.[examples]')")
        return None
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, [h["train_loss"] for h in history], label="train")
    left.plot(epochs, [h["test_loss"] for h in history], label="test")
    left.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    left.legend()
    right.plot(epochs, [100 * h["test_accuracy"] for h in history], color="tab:green")
    right.set(xlabel="epoch", ylabel="%", title="test accuracy")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def train(epochs=30, batch_size=32, lr=0.05, momentum=0.9, seed=0, log=print):
    """Train from scratch; returns (model, history of per-epoch dicts)."""
    x_train, y_train, x_test, y_test = load_data(seed)
    model = build_model(seed)
    optimizer = nn.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(1, epochs + 1):
        start, total = time.perf_counter(), 0.0
        order = rng.permutation(len(x_train))
        for i in range(0, len(order), batch_size):
            batch = order[i:i + batch_size]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(nn.Tensor(x_train[batch])), y_train[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        test_loss, accuracy = evaluate(model, x_test, y_test)
        history.append({"epoch": epoch, "train_loss": total / len(order), "test_loss": test_loss,
                        "test_accuracy": accuracy})
        log(f"epoch {epoch:3d}  train loss {total / len(order):.4f}  test loss {test_loss:.4f}  "
            f"test accuracy {100 * accuracy:.2f}%  ({time.perf_counter() - start:.2f} s)")
    return model, history


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="digits.png", help="PNG path ('' for none)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    _, history = train(args.epochs, args.batch_size, args.lr, seed=args.seed)
    print(f"final test accuracy {100 * history[-1]['test_accuracy']:.2f}% in "
          f"{time.perf_counter() - start:.1f} s")
    if args.plot and save_plot(history, args.plot):
        print(f"plot saved to {args.plot}")


if __name__ == "__main__":
    main()

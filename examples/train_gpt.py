"""A character-level GPT trained with tensor x data parallelism on text that ships with
Python itself: the documentation strings of a fixed list of standard-library modules.

    mpirun -n 4 python examples/train_gpt.py --tp 2          # 2-way tensor x 2-way data parallel
    python examples/train_gpt.py --tp 1                      # the single-process baseline
    mpirun -n 4 python examples/train_gpt.py --tp 2 --sequence-parallel
           [--steps 1000] [--batch-size 16] [--checkpoint gpt.npz] [--checkpoint-every 100] [--resume]
           [--history run.json] [--compare baseline.json --plot docs/gpt_loss.png]

Every layout sees the same global batches (drawn from a seed and the step number) and
starts from the same weights (the tensor-parallel ranks keep slices of the single-process
model), so the loss curves agree up to float32 rounding. Rank 0 prints the training loss
and, every --eval-every steps, the validation loss; at the end it samples a few lines.
With --checkpoint, dp rank 0 of each tensor-parallel group saves its shard (file name
gets ".tp<rank>of<size>") every --checkpoint-every steps; --resume continues from those
files and ends with the same weights, bit for bit, as a run that never stopped (the last
line prints their digest). --die-at-step N makes rank 1 kill itself at step N to try it.
"""
import argparse
import functools
import hashlib
import importlib
import inspect
import json
import os
import signal
import string
import sys
import threading
import time
import warnings

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")     # ranks share the cores
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import collectives as cc  # noqa: E402
import nn  # noqa: E402
from nn.parallel import (  # noqa: E402
    DistributedDataParallel,
    ParallelGPT,
    ProcessGrid,
    load_checkpoint,
    save_checkpoint,
)

MODULES = ("argparse", "collections", "json", "textwrap", "string", "functools", "itertools", "pathlib",
           "random", "statistics", "csv", "datetime", "heapq", "bisect", "fractions", "decimal", "shutil",
           "logging", "unittest", "typing", "enum", "dataclasses", "contextlib", "difflib", "calendar", "re",
           "os", "subprocess", "threading", "queue", "zipfile", "tarfile", "pickle", "socket", "asyncio")
ALPHABET = "".join(c for c in string.printable if c not in "\t\r\x0b\x0c")   # 96, newline included


_TEXT_LOCK = threading.Lock()      # in-process ranks are threads: one of them reads, once


@functools.cache
def _read_docstrings(modules):
    parts = []
    with warnings.catch_warnings():              # typing.io and typing.re warn when touched
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in modules:
            module = importlib.import_module(name)
            objects = [module] + [value for key, value in sorted(vars(module).items())
                                  if not key.startswith("_") and getattr(value, "__module__", None) == name]
            parts += [doc for doc in map(inspect.getdoc, objects) if doc]
    known = set(ALPHABET)
    return "".join(c if c in known else " " for c in "\n\n".join(parts))


def load_text(modules=MODULES):
    """The docstrings of `modules` and of the classes and functions they define, in a fixed
    order, restricted to ALPHABET (anything else becomes a space)."""
    with _TEXT_LOCK:
        return _read_docstrings(tuple(modules))


def encode(text):
    """Characters -> token ids (positions in ALPHABET)."""
    lookup = {c: i for i, c in enumerate(ALPHABET)}
    return np.array([lookup[c] for c in text], dtype=np.int64)


def decode(ids):
    """Token ids -> characters."""
    return "".join(ALPHABET[i] for i in ids)


def batch(data, step, size, block, seed):
    """The global batch of `step`: `size` windows of block + 1 tokens at offsets drawn from
    (seed, step), so every layout and every resumed run sees the same batches."""
    starts = np.random.default_rng([seed, step]).integers(0, len(data) - block - 1, size)
    return np.stack([data[s:s + block + 1] for s in starts])


def learning_rate(step, args):
    """Linear warm-up over the first 5% of the steps, then cosine decay to lr / 10."""
    warmup = max(1, args.steps // 20)
    if step < warmup:
        return args.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, args.steps - warmup)
    return args.lr * (0.1 + 0.45 * (1 + np.cos(np.pi * progress)))


def build(comm, args):
    """The process grid, the tensor-parallel GPT wrapped in DDP, and its AdamW."""
    grid = ProcessGrid(comm, tp=args.tp)
    config = nn.GPTConfig(vocab_size=len(ALPHABET), block_size=args.block_size, n_layer=args.layers,
                          n_head=args.heads, n_embd=args.dim, dropout=0.0, activation="gelu_tanh")
    nn.manual_seed(args.seed)
    model = DistributedDataParallel(ParallelGPT(config, grid.tp, sequence_parallel=args.sequence_parallel),
                                    grid.dp)
    optimizer = nn.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    return grid, model, optimizer


def evaluate(model, data, args, grid, batches=4):
    """Mean loss over `batches` fixed validation batches (the same on every layout)."""
    losses = []
    with nn.no_grad():
        for i in range(batches):
            rows = batch(data, 10**9 + i, args.batch_size, args.block_size, args.seed)
            mine = np.array_split(rows, grid.dp_size)[grid.dp_rank]
            losses.append(model.module(mine[:, :-1], mine[:, 1:]).item())
    return float(grid.dp.allreduce(np.array([np.mean(losses)]), "avg")[0])


def weights_digest(model, comm):
    """A short hash of every rank's weights (all shards), to compare runs bit for bit."""
    digest = hashlib.sha256()
    for name, value in model.module.state_dict().items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    everyone = comm.allgather(np.frombuffer(digest.digest(), np.uint8).copy())
    return hashlib.sha256(everyone.tobytes()).hexdigest()[:16]


def shard_path(path, grid):
    return f"{path}.tp{grid.tp_rank}of{grid.tp_size}" if path else ""


def train(comm, args, log=print):
    """Train as `args` say on `comm`; returns (history, sample text, weights digest)."""
    if args.batch_size % (comm.size // args.tp):
        raise SystemExit(f"--batch-size {args.batch_size} must divide by the {comm.size // args.tp} "
                         f"data-parallel groups")
    say = log if comm.rank == 0 else (lambda *a, **k: None)
    text = load_text()
    data = encode(text)
    split = int(0.9 * len(data))
    train_data, val_data = data[:split], data[split:]
    grid, model, optimizer = build(comm, args)
    checkpoint = shard_path(args.checkpoint, grid)
    step = 0
    if args.resume and checkpoint and os.path.exists(checkpoint):
        step = load_checkpoint(checkpoint, model, optimizer)
        say(f"resumed from {args.checkpoint} at step {step}")
    params = sum(p.size for p in model.module.parameters())
    say(f"char GPT on {len(text):,} characters of standard-library docstrings (vocabulary {len(ALPHABET)}): "
        f"{args.layers} layers, {args.heads} heads, dim {args.dim}, context {args.block_size}; tensor parallel "
        f"over {grid.tp_size}{' + sequence parallel' if args.sequence_parallel else ''} x data parallel over "
        f"{grid.dp_size}; {params:,} parameters per rank; global batch {args.batch_size}")
    history, start, window = [], time.perf_counter(), []
    while step < args.steps:
        if args.die_at_step and step + 1 == args.die_at_step and comm.rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        rows = np.array_split(batch(train_data, step, args.batch_size, args.block_size, args.seed),
                              grid.dp_size)[grid.dp_rank]
        optimizer.param_groups[0]["lr"] = learning_rate(step, args)
        optimizer.zero_grad()
        loss = model(rows[:, :-1], rows[:, 1:])
        loss.backward()
        optimizer.step()
        step += 1
        window.append(loss.item())
        if checkpoint and step % args.checkpoint_every == 0:
            save_checkpoint(checkpoint, model, optimizer, step=step, comm=grid.dp)
        if step % args.eval_every == 0 or step == args.steps:
            train_loss = float(grid.dp.allreduce(np.array([np.mean(window)]), "avg")[0])
            val_loss = evaluate(model, val_data, args, grid)
            history.append({"step": step, "train_loss": train_loss, "val_loss": val_loss})
            say(f"step {step:5d}  train loss {train_loss:.4f}  val loss {val_loss:.4f}  "
                f"({time.perf_counter() - start:.1f} s)")
            window = []
    prompt = encode("Return the ")[None]
    sample = decode(model.module.generate(prompt, args.sample_chars, temperature=0.8,
                                          rng=np.random.default_rng(args.seed))[0])
    digest = weights_digest(model, comm)
    say(f"--- sample ---\n{sample}\n--------------")
    say(f"final train loss {history[-1]['train_loss']:.4f}  val loss {history[-1]['val_loss']:.4f} after "
        f"{step} steps in {time.perf_counter() - start:.1f} s; weights digest {digest}")
    return history, sample, digest


def save_plot(runs, path):
    """Training and validation loss of each run ({label: history}) against the step."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axis = plt.subplots(figsize=(6.5, 4))
    styles = zip(("tab:blue", "tab:orange", "tab:green"), (5, 2, 1))     # wide first: equal runs stay visible
    for (label, history), (color, width) in zip(runs.items(), styles):
        steps = [h["step"] for h in history]
        axis.plot(steps, [h["train_loss"] for h in history], color=color, linewidth=width, label=f"{label}: train")
        axis.plot(steps, [h["val_loss"] for h in history], color=color, linewidth=width, linestyle="--",
                  label=f"{label}: validation")
    axis.set(xlabel="step", ylabel="cross-entropy (nats per character)", title="char GPT on stdlib docstrings")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tp", type=int, default=1, help="ranks per tensor-parallel group")
    parser.add_argument("--sequence-parallel", action="store_true")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch (sequences)")
    parser.add_argument("--block-size", type=int, default=64, help="context length")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--sample-chars", type=int, default=200)
    parser.add_argument("--checkpoint", default="", help="checkpoint file ('' for none)")
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    parser.add_argument("--die-at-step", type=int, default=0, help="fault injection: rank 1 SIGKILLs itself")
    parser.add_argument("--history", default="", help="write the loss history to this JSON file")
    parser.add_argument("--compare", default="", help="a --history file to plot beside this run")
    parser.add_argument("--plot", default="", help="PNG of the loss curves (rank 0)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    comm = cc.init()
    history, _, _ = train(comm, args)
    if comm.rank == 0:
        label = f"tp {args.tp} x dp {comm.size // args.tp}" + (" + sp" if args.sequence_parallel else "")
        if args.history:
            with open(args.history, "w") as handle:
                json.dump({"label": label, "history": history}, handle)
        if args.plot:
            runs = {}
            if args.compare:
                with open(args.compare) as handle:
                    other = json.load(handle)
                runs[other["label"]] = other["history"]
            runs[label] = history
            save_plot(runs, args.plot)


if __name__ == "__main__":
    main()

"""Checks run under `mpirun -n N python -m tests.torch_check SECTION` (test_torch_mpi.py).

ops:   the default group is "collectives" (init_process_group with no environment set by
       hand: rank, world size and the store's address come from MPI); every backend
       operation runs on the same inputs there and on a "gloo" group, and the results
       must agree (bit for bit for data movement, integers, min and max; to rounding for
       floating-point sums and products, whose order differs).
train: PyTorch DDP on a float64 model, with "collectives" and with "gloo", against one
       process training on the global batch; FSDP2 (fully_shard) on both backends.
fault: one rank passes a tensor of the wrong size: every rank gets an error, none hangs.
Rank 0 prints "torch_check ok SECTION" at the end.
"""
import hashlib
import sys
import threading
import warnings
from datetime import timedelta

import torch
import torch.distributed as dist

import collectives as cc
import collectives.pytorch  # noqa: F401  (registers the backend, fills in the rendezvous)
from tests.mpirun import run_or_abort


def agree(ours, theirs, what, exact=True):
    """Assert two results (tensors or lists of tensors) agree."""
    if isinstance(ours, (list, tuple)):
        assert len(ours) == len(theirs), what
        for a, b in zip(ours, theirs):
            agree(a, b, what, exact)
        return
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, f"{what}: {ours} vs {theirs}"
    if exact or not ours.is_floating_point():
        assert torch.equal(ours, theirs), f"{what}: {ours} vs {theirs}"
    else:
        torch.testing.assert_close(ours, theirs, msg=what)


def rank_tensor(rank, count, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(1000 * seed + rank)
    values = torch.randn(count, generator=g, dtype=torch.float64) * 5
    if dtype == torch.bool:
        return values > 0
    return values.to(dtype)


def both(fn, gloo):
    """fn(group) on our default group and on the gloo group: (ours, gloo's)."""
    return fn(None), fn(gloo)


def check_reductions(gloo, r, n):
    for dtype in (torch.float64, torch.float32, torch.int64, torch.int32):
        for op in ("SUM", "PRODUCT", "MIN", "MAX"):
            def allreduce(group, dtype=dtype, op=op):
                x = rank_tensor(r, 37, dtype, seed=1)
                dist.all_reduce(x, getattr(dist.ReduceOp, op), group=group)
                return x
            exact = op in ("MIN", "MAX")
            agree(*both(allreduce, gloo), f"all_reduce {op} {dtype}", exact)

            def reduce(group, dtype=dtype, op=op):
                x = rank_tensor(r, 11, dtype, seed=2)
                dist.reduce(x, dst=n - 1, op=getattr(dist.ReduceOp, op), group=group)
                return x
            ours, theirs = both(reduce, gloo)
            if r == n - 1:
                agree(ours, theirs, f"reduce {op} {dtype}", exact)
    ours = rank_tensor(r, 9)
    dist.all_reduce(ours, dist.ReduceOp.AVG)                      # gloo has no AVG: SUM / n
    theirs = rank_tensor(r, 9)
    dist.all_reduce(theirs, group=gloo)
    agree(ours, theirs / n, "all_reduce AVG", exact=False)

    def coalesced(group):
        tensors = [rank_tensor(r, 5, seed=3), rank_tensor(r, 3, seed=4)]
        dist.all_reduce_coalesced(tensors, group=group)
        return tensors
    agree(*both(coalesced, gloo), "all_reduce_coalesced", exact=False)


def check_reduce_scatters(gloo, r, n):
    def tensor_form(group):
        out = torch.empty(6, dtype=torch.float64)
        dist.reduce_scatter_tensor(out, rank_tensor(r, 6 * n, seed=5), group=group)
        return out
    agree(*both(tensor_form, gloo), "reduce_scatter_tensor", exact=False)

    def list_form(group):
        out = torch.empty(4, dtype=torch.int64)
        dist.reduce_scatter(out, list(rank_tensor(r, 4 * n, torch.int64, seed=6).chunk(n)), group=group)
        return out
    ours = list_form(None)
    expected = sum(rank_tensor(q, 4 * n, torch.int64, seed=6) for q in range(n))[4 * r:4 * r + 4]
    agree(ours, expected, "reduce_scatter (list) against the sum")   # gloo has no list reduce_scatter


def check_movement(gloo, r, n):
    for dtype in (torch.float64, torch.int8, torch.bool, torch.bfloat16, torch.complex64):
        for root in (0, n - 1):
            def broadcast(group, dtype=dtype, root=root):
                x = rank_tensor(r, 13, torch.float64, seed=7).to(dtype) if dtype != torch.bool \
                    else rank_tensor(r, 13, torch.bool, seed=7)
                dist.broadcast(x, src=root, group=group)
                return x
            agree(*both(broadcast, gloo), f"broadcast {dtype} from {root}")

    def gather_into_tensor(group):
        out = torch.empty(n * 3, 2, dtype=torch.float32)
        dist.all_gather_into_tensor(out, rank_tensor(r, 6, torch.float32, seed=8).view(3, 2), group=group)
        return out
    agree(*both(gather_into_tensor, gloo), "all_gather_into_tensor")

    def gather_list(group):
        outs = [torch.empty(4, dtype=torch.int64) for _ in range(n)]
        dist.all_gather(outs, rank_tensor(r, 4, torch.int64, seed=9), group=group)
        return outs
    agree(*both(gather_list, gloo), "all_gather")

    def objects(group):
        gathered = [None] * n
        dist.all_gather_object(gathered, {"rank": r, "tail": "x" * r}, group=group)
        sent = [{"from": r, "items": list(range(r + 2))}]
        dist.broadcast_object_list(sent, src=n - 1, group=group)
        return gathered, sent
    ours, theirs = both(objects, gloo)
    assert ours == theirs and ours[0][n - 1] == {"rank": n - 1, "tail": "x" * (n - 1)}, ours


def check_rooted_and_all_to_all(gloo, r, n):
    def gather_scatter(group):
        root = n - 1
        outs = [torch.empty(3, dtype=torch.int32) for _ in range(n)] if r == root else None
        dist.gather(rank_tensor(r, 3, torch.int32, seed=11), outs, dst=root, group=group)
        got = torch.empty(5, dtype=torch.float64)
        blocks = [rank_tensor(q, 5, seed=12) for q in range(n)] if r == 1 else None
        dist.scatter(got, blocks, src=1, group=group)
        return (outs or []) + [got]
    agree(*both(gather_scatter, gloo), "gather and scatter")

    def objects(group):
        gathered = [None] * n if r == 0 else None
        dist.gather_object({"r": r}, gathered, dst=0, group=group)
        received = [None]
        dist.scatter_object_list(received, [f"for {q}" for q in range(n)] if r == 1 else None, src=1,
                                 group=group)
        return gathered, received
    ours, theirs = both(objects, gloo)
    assert ours == theirs and ours[1] == [f"for {r}"], ours

    def even(group):
        out = torch.empty(2 * n, 3, dtype=torch.float64)
        dist.all_to_all_single(out, rank_tensor(r, 6 * n, seed=13).view(2 * n, 3), group=group)
        return out
    agree(*both(even, gloo), "all_to_all_single even")

    def uneven(group):
        send = [(r + 2 * j) % 4 for j in range(n)]                    # 0 rows to some ranks
        receive = [(i + 2 * r) % 4 for i in range(n)]
        out = torch.empty(sum(receive), 2, dtype=torch.int64)
        data = rank_tensor(r, 2 * sum(send), torch.int64, seed=14).view(-1, 2)
        dist.all_to_all_single(out, data, receive, send, group=group)
        return out
    agree(*both(uneven, gloo), "all_to_all_single uneven")

    def point_to_point(group):
        right, left = (r + 1) % n, (r - 1) % n
        got = [torch.empty(4, dtype=torch.float32) for _ in range(2)]
        ops = [dist.P2POp(dist.isend, rank_tensor(r, 4, torch.float32, seed=15 + k), right, group)
               for k in range(2)] + [dist.P2POp(dist.irecv, t, left, group) for t in got]
        for work in dist.batch_isend_irecv(ops):
            work.wait()
        if r == 0:
            dist.send(rank_tensor(r, 2, torch.float32, seed=17), dst=n - 1, group=group)
        if r == n - 1 and group is None:
            dist.recv(got[0][::2], src=0, group=group)            # a strided view: written back
        elif r == n - 1:                                           # gloo takes contiguous tensors only
            contiguous = torch.empty(2, dtype=torch.float32)
            dist.recv(contiguous, src=0, group=group)
            got[0][::2] = contiguous
        return got
    agree(*both(point_to_point, gloo), "send/recv around a ring")


def check_async_out_of_order(gloo, r, n):
    def run(group):
        tensors = [rank_tensor(r, 100 + k, seed=10 + k) for k in range(4)]
        works = [dist.all_reduce(t, group=group, async_op=True) for t in tensors]
        for work in (works[2], works[0], works[3], works[1]):
            work.wait()
        futures = [dist.all_reduce(t, group=group, async_op=True).get_future() for t in tensors]
        torch.futures.wait_all(futures)
        return tensors
    agree(*both(run, gloo), "async all_reduce waited out of order", exact=False)


def ops():
    r, n = dist.get_rank(), dist.get_world_size()
    assert dist.get_backend() == "collectives"
    gloo = dist.new_group(backend="gloo")
    check_reductions(gloo, r, n)
    check_reduce_scatters(gloo, r, n)
    check_movement(gloo, r, n)
    check_rooted_and_all_to_all(gloo, r, n)
    check_async_out_of_order(gloo, r, n)
    dist.barrier()


STEPS = 5


def make_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16),
                               torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()


def global_batch(n, step):
    g = torch.Generator().manual_seed(500 + step)
    return torch.randn(8 * n, 10, generator=g, dtype=torch.float64), torch.randn(8 * n, 3, generator=g,
                                                                                dtype=torch.float64)


def train(model, r, n, local=True):
    """STEPS of SGD with momentum on the global batch (this rank's rows when `local`)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step in range(STEPS):
        x, y = global_batch(n, step)
        if local:
            x, y = x.chunk(n)[r], y.chunk(n)[r]
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
    return [p.detach().clone() for p in model.parameters()]


def relative_error(ours, reference):
    return max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(ours, reference))


def digest(tensors):
    h = hashlib.sha1()
    for t in tensors:
        h.update(t.detach().numpy().tobytes())
    return h.hexdigest()


def same_on_every_rank(tensors, n):
    digests = [None] * n
    dist.all_gather_object(digests, digest(tensors))
    return len(set(digests)) == 1


def check_ddp(gloo, r, n):
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel as DDP
    reference = train(make_model(), r, n, local=False)
    ours = train(DDP(make_model(), bucket_cap_mb=0.001), r, n)        # several buckets in flight
    hooked = DDP(make_model())
    hooked.register_comm_hook(None, default_hooks.allreduce_hook)
    with_hook = train(hooked, r, n)
    theirs = train(DDP(make_model(), process_group=gloo), r, n)
    assert relative_error(ours, reference) < 1e-9, relative_error(ours, reference)
    assert relative_error(with_hook, reference) < 1e-9, relative_error(with_hook, reference)
    assert relative_error(theirs, reference) < 1e-9, relative_error(theirs, reference)
    assert same_on_every_rank(ours, n) and same_on_every_rank(with_hook, n)
    agree(ours, theirs, "DDP collectives vs gloo", exact=False)


def check_fsdp2(gloo, r, n):
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.fsdp import fully_shard
    reference = train(make_model(), r, n, local=False)
    results = []
    for mesh in (None, DeviceMesh.from_group(gloo, "cpu")):
        model = make_model()
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        train(model, r, n)
        results.append([p.full_tensor().detach() for p in model.parameters()])
    assert relative_error(results[0], reference) < 1e-9, relative_error(results[0], reference)
    assert relative_error(results[1], reference) < 1e-9, relative_error(results[1], reference)
    agree(results[0], results[1], "FSDP2 collectives vs gloo", exact=False)


def training():
    r, n = dist.get_rank(), dist.get_world_size()
    gloo = dist.new_group(backend="gloo")
    check_ddp(gloo, r, n)
    check_fsdp2(gloo, r, n)


def said(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()                                              # one write: lines stay whole


def point_to_point_sizes_disagree(r):
    """Rank 0 sends 4 elements where rank 1 receives 2, rank 2 sends 4 where rank 3
    receives 8: each receiver raises the engine's TransportError naming both ranks."""
    if r % 2 == 0:
        dist.send(torch.ones(4, dtype=torch.float64), r + 1)
        return
    x = torch.zeros(2 if r == 1 else 8, dtype=torch.float64)
    try:
        dist.recv(x, r - 1)
    except cc.TransportError as error:
        said(f"rank {r} recv raised {type(error).__name__}: {error}")
    else:
        raise AssertionError(f"rank {r}: a receive of the wrong size returned {x}")


def fault():
    """Point-to-point sizes that disagree (the group goes on), then rank 1 passes one
    element more than the others to an all-reduce."""
    r = dist.get_rank()
    point_to_point_sizes_disagree(r)
    dist.barrier()
    x = torch.ones(100_000 + (r == 1), dtype=torch.float64)
    try:
        dist.all_reduce(x)
    except (cc.CollectiveTimeout, cc.TransportError, cc.CollectiveMismatch) as error:
        said(f"rank {r} raised {type(error).__name__}: {str(error).splitlines()[0]}")
    else:
        raise AssertionError(f"rank {r}: a mismatched all-reduce returned")


def main():
    section = sys.argv[1]
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch's renames of the *_tensor calls
    dist.init_process_group("collectives", timeout=timedelta(seconds=5 if section == "fault" else 60))
    rank = dist.get_rank()
    world = dist.distributed_c10d._get_default_group()
    {"ops": ops, "train": training, "fault": fault}[section]()
    dist.destroy_process_group()
    assert world.comm.freed, "destroy_process_group left the Communicator alive"
    assert not [t for t in threading.enumerate() if t.name.startswith("torch-collectives")]
    if rank == 0:
        print(f"torch_check ok {section}", flush=True)


if __name__ == "__main__":
    run_or_abort(main)

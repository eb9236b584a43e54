"""The PyTorch backend's operations on in-process ranks (cc.run_threads): each torch
ProcessGroup method against a float64 reference, every dtype path (direct views, raw
bytes, bfloat16 in float32), non-contiguous tensors, async order, and bad input.
The same operations against gloo under mpirun: test_torch_mpi.py."""
import threading
import time

import pytest

import collectives as cc

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
backend = pytest.importorskip("collectives.pytorch")

N = 3


def on_ranks(fn, n=N, algorithms=None):
    """fn(pg, rank) on n in-process ranks, each with a ProcessGroup over its Communicator."""
    def rank_main(comm):
        pg = backend.ProcessGroup(comm, algorithms)
        try:
            return fn(pg, comm.rank)
        finally:
            pg.shutdown()
    return cc.run_threads(n, rank_main)


def rank_input(rank, count=7, dtype=torch.float64):
    g = torch.Generator().manual_seed(100 + rank)
    return (torch.randn(count, generator=g, dtype=torch.float64) * 3).to(dtype)


def opts(kind, op=None, root=None):
    o = getattr(dist, kind)()
    if op is not None:
        o.reduceOp = op
    if root is not None:
        o.rootRank = root
    return o


REFERENCE = {"SUM": lambda s: s.sum(0), "AVG": lambda s: s.mean(0), "PRODUCT": lambda s: s.prod(0),
             "MIN": lambda s: s.min(0).values, "MAX": lambda s: s.max(0).values}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_allreduce_every_op_matches_float64_reference(name):
    op = getattr(dist.ReduceOp, name)

    def main(pg, rank):
        x = rank_input(rank)
        pg.allreduce([x], opts("AllreduceOptions", op)).wait()
        return x
    results = on_ranks(main)
    expected = REFERENCE[name](torch.stack([rank_input(r) for r in range(N)]))
    for got in results:
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
        assert torch.equal(got, results[0])                   # bitwise the same on every rank


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int32, torch.int64, torch.uint8])
def test_allreduce_sum_keeps_the_tensors_dtype(dtype):
    def main(pg, rank):
        x = torch.arange(10).to(dtype) + rank
        pg.allreduce([x]).wait()
        return x
    for got in on_ranks(main):
        assert got.dtype == dtype
        assert torch.equal(got, (torch.arange(10) * N + sum(range(N))).to(dtype))


def test_bfloat16_is_summed_in_float32_and_rounded_once():
    values = [torch.tensor([1.0, 2**-9, 2**-9, 3.0]), torch.tensor([256.0, 2**-9, 1.0, 2**-8]),
              torch.tensor([-256.0, 2**-9, 2**-9, 1.0])]

    def main(pg, rank):
        x = values[rank].to(torch.bfloat16)
        pg.allreduce([x]).wait()
        return x
    once = sum(v.to(torch.bfloat16).float() for v in values).to(torch.bfloat16)
    for got in on_ranks(main):
        assert got.dtype == torch.bfloat16 and torch.equal(got, once)
    # summing in bfloat16 step by step would lose the small terms: the test can tell the two apart
    stepwise = values[0].to(torch.bfloat16) + values[1].to(torch.bfloat16) + values[2].to(torch.bfloat16)
    assert not torch.equal(stepwise, once)


def test_premul_sum_multiplies_every_input_by_the_factor():
    def main(pg, rank):
        x = rank_input(rank)
        pg.allreduce([x], opts("AllreduceOptions", dist._make_nccl_premul_sum(0.25))).wait()
        return x
    expected = 0.25 * torch.stack([rank_input(r) for r in range(N)]).sum(0)
    for got in on_ranks(main):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_bitwise_ops_are_a_clear_error():
    def main(pg, rank):
        with pytest.raises(ValueError, match="does not implement ReduceOp BAND"):
            pg.allreduce([torch.ones(2, dtype=torch.int32)], opts("AllreduceOptions", dist.ReduceOp.BAND))
    on_ranks(main)


def test_non_contiguous_tensor_is_reduced_and_written_back():
    def main(pg, rank):
        base = torch.arange(12, dtype=torch.float64).reshape(3, 4) * (rank + 1)
        view = base.t()                                           # strides (1, 4): not contiguous
        pg.allreduce([view]).wait()
        return base
    expected = torch.arange(12, dtype=torch.float64).reshape(3, 4) * sum(range(1, N + 1))
    for got in on_ranks(main):
        assert torch.equal(got, expected)


def test_contiguous_cpu_tensor_is_reduced_in_its_own_memory():
    def main(pg, rank):
        x = torch.ones(5)
        address = x.data_ptr()
        pg.allreduce([x]).wait()
        return x.data_ptr() == address and bool((x == N).all())
    assert all(on_ranks(main))


def test_allreduce_coalesced_reduces_each_tensor_of_mixed_dtypes():
    def main(pg, rank):
        tensors = [rank_input(rank, 3), torch.full((2, 2), rank, dtype=torch.int32), rank_input(rank, 1)]
        pg.allreduce_coalesced(tensors).wait()
        return tensors
    stacks = [torch.stack([rank_input(r, 3) for r in range(N)]), torch.stack([rank_input(r, 1) for r in range(N)])]
    for got in on_ranks(main):
        torch.testing.assert_close(got[0], stacks[0].sum(0), rtol=1e-12, atol=1e-12)
        assert torch.equal(got[1], torch.full((2, 2), sum(range(N)), dtype=torch.int32))
        torch.testing.assert_close(got[2], stacks[1].sum(0), rtol=1e-12, atol=1e-12)


def test_reduce_writes_only_roots_tensor():
    def main(pg, rank):
        x = rank_input(rank)
        pg.reduce([x], opts("ReduceOptions", dist.ReduceOp.MAX, root=1)).wait()
        return x
    results = on_ranks(main)
    assert torch.equal(results[1], torch.stack([rank_input(r) for r in range(N)]).max(0).values)
    assert torch.equal(results[0], rank_input(0)) and torch.equal(results[2], rank_input(2))


@pytest.mark.parametrize("dtype", [torch.bool, torch.complex64, torch.bfloat16, torch.float64])
def test_broadcast_moves_any_dtype_bit_for_bit(dtype):
    def main(pg, rank):
        x = (rank_input(rank, 6) > 0) if dtype == torch.bool else rank_input(rank, 6).to(dtype)
        pg.broadcast([x], opts("BroadcastOptions", root=2)).wait()
        return x
    expected = on_ranks(main)[2]
    for got in on_ranks(main):
        assert got.dtype == dtype and torch.equal(got, expected)


def test_all_gather_into_tensor_and_into_a_list():
    def main(pg, rank):
        x = torch.full((2, 3), float(rank))
        out = torch.empty(2 * N, 3)
        pg.all_gather_single(out, x).wait()
        outs = [torch.empty(2, 3) for _ in range(N)]
        pg.allgather([outs], [x]).wait()
        return out, outs
    expected = torch.cat([torch.full((2, 3), float(r)) for r in range(N)])
    for out, outs in on_ranks(main):
        assert torch.equal(out, expected)
        assert torch.equal(torch.cat(outs), expected)


def test_reduce_scatter_tensor_list_and_coalesced_forms_agree():
    def main(pg, rank):
        x = rank_input(rank, 4 * N)
        single, listed = torch.empty(4, dtype=torch.float64), torch.empty(4, dtype=torch.float64)
        pg.reduce_scatter_single(single, x).wait()
        pg.reduce_scatter([listed], [list(x.chunk(N))]).wait()
        coalesced = [torch.empty(4, dtype=torch.float64), torch.empty(2, dtype=torch.float64)]
        pg.reduce_scatter_single_coalesced(coalesced, [x, x[:2 * N]]).wait()
        return single, listed, coalesced
    total = torch.stack([rank_input(r, 4 * N) for r in range(N)]).sum(0)
    for rank, (single, listed, coalesced) in enumerate(on_ranks(main)):
        torch.testing.assert_close(single, total[4 * rank:4 * rank + 4], rtol=1e-12, atol=1e-12)
        assert torch.equal(listed, single) and torch.equal(coalesced[0], single)
        part = torch.stack([rank_input(r, 4 * N)[:2 * N] for r in range(N)]).sum(0)
        torch.testing.assert_close(coalesced[1], part[2 * rank:2 * rank + 2], rtol=1e-12, atol=1e-12)


def test_async_work_waited_out_of_order_and_futures_hold_the_tensors():
    def main(pg, rank):
        tensors = [torch.full((3,), float(rank + k)) for k in range(4)]
        works = [pg.allreduce([t]) for t in tensors]
        for work in reversed(works):
            work.wait()
        assert all(w.is_completed() and w.is_success() for w in works)
        return [w.get_future().value()[0] for w in works]
    for values in on_ranks(main):
        assert [float(v[0]) for v in values] == [sum(range(N)) + N * k for k in range(4)]


def test_wrong_output_size_is_an_error_before_any_communication():
    def main(pg, rank):
        with pytest.raises(ValueError, match=f"rank {rank}: all_gather_into_tensor needs an output"):
            pg.all_gather_single(torch.empty(N + 1), torch.ones(1))
        with pytest.raises(ValueError, match="must be a list of 3 tensors"):
            pg.allgather([[torch.empty(1)]], [torch.ones(1)])
        with pytest.raises(ValueError, match="reduce_scatter inputs must each hold 16 bytes"):
            pg.reduce_scatter([torch.empty(4)], [[torch.ones(3), torch.ones(5), torch.ones(4)]])
        pg.barrier().wait()                                    # the group is still usable
    on_ranks(main)


def test_engine_errors_reach_wait_with_their_type():
    def main(pg, rank):
        work = pg.allreduce([torch.ones(2, dtype=torch.int32)], opts("AllreduceOptions", dist.ReduceOp.AVG))
        with pytest.raises(TypeError, match="avg"):
            work.wait()
        assert not work.is_success()
    on_ranks(main)


def test_chosen_algorithm_is_the_one_the_engine_runs():
    def main(pg, rank):
        x = torch.ones(1000)
        pg.allreduce([x]).wait()
        return [e["algorithm"] for e in pg.comm.flight_record() if e["call"].startswith("allreduce")]
    assert on_ranks(main, algorithms={"allreduce": "tree"})[0] == ["tree"]


def test_algorithm_options_by_name_dict_and_environment(monkeypatch):
    def main(pg, rank):
        comm = pg.comm
        assert backend.algorithms_for(comm, "ring") == {"allreduce": "ring", "reduce_scatter": "ring",
                                                        "allgather": "ring", "reduce": "ring"}
        assert backend.algorithms_for(comm, {"broadcast": "pipeline"}) == {"broadcast": "pipeline"}
        assert backend.algorithms_for(comm, "allreduce=tree, broadcast=tree") == {"allreduce": "tree",
                                                                                 "broadcast": "tree"}
        with pytest.raises(ValueError, match="unknown allreduce algorithm 'bogus'"):
            backend.algorithms_for(comm, {"allreduce": "bogus"})
        with pytest.raises(ValueError, match="no collective has an algorithm named 'bogus'"):
            backend.algorithms_for(comm, "bogus")
        return backend.algorithms_for(comm, None)
    monkeypatch.setenv("COLLECTIVES_ALGORITHM", "allreduce=recursive_doubling")
    assert on_ranks(main, n=2)[0] == {"allreduce": "recursive_doubling"}


def test_pg_options_forms():
    assert backend.options_from(None) == backend.Options()
    assert backend.options_from("ring").algorithm == "ring"
    assert backend.options_from({"algorithm": "tree", "debug": True}) == backend.Options("tree", True)
    with pytest.raises(ValueError, match="unknown pg_options"):
        backend.options_from({"algo": "ring"})
    with pytest.raises(TypeError, match="pg_options for backend 'collectives'"):
        backend.options_from(3)


def test_backend_is_registered_for_cpu_and_cuda():
    assert "collectives" in dist.Backend.backend_list
    assert dist.Backend.backend_capability["collectives"] == ["cpu", "cuda"]



def test_gather_and_scatter_through_the_root():
    def main(pg, rank):
        outs = [torch.empty(2, 2) for _ in range(N)] if rank == 1 else []
        pg.gather([outs] if rank == 1 else [], [torch.full((2, 2), float(rank))], opts("GatherOptions", root=1)).wait()
        got = torch.empty(3, dtype=torch.int16)
        blocks = [torch.arange(3, dtype=torch.int16) + 10 * r for r in range(N)] if rank == 2 else []
        pg.scatter([got], [blocks] if rank == 2 else [], opts("ScatterOptions", root=2)).wait()
        return outs, got
    results = on_ranks(main)
    assert torch.equal(torch.stack(results[1][0]), torch.stack([torch.full((2, 2), float(r)) for r in range(N)]))
    for rank, (_, got) in enumerate(results):
        assert torch.equal(got, torch.arange(3, dtype=torch.int16) + 10 * rank)


def test_all_to_all_single_even_and_uneven_and_the_list_form():
    def main(pg, rank):
        even_in = torch.arange(2 * N * 3, dtype=torch.float32).reshape(2 * N, 3) + 100 * rank
        even_out = torch.empty_like(even_in)
        pg.all_to_all_single(even_out, even_in, [], []).wait()
        send = [(rank + j) % 3 for j in range(N)]                    # rows for rank j, zeros included
        receive = [(i + rank) % 3 for i in range(N)]
        uneven_in = torch.cat([torch.full((send[j], 2), 10.0 * rank + j) for j in range(N)])
        uneven_out = torch.empty(sum(receive), 2)
        pg.all_to_all_single(uneven_out, uneven_in, receive, send).wait()
        list_out = [torch.empty(i + 1, dtype=torch.int64) for i in range(N)]
        pg.alltoall(list_out, [torch.full((rank + 1,), rank * N + j) for j in range(N)]).wait()
        return even_out, uneven_out, list_out
    rows = torch.arange(2 * N * 3, dtype=torch.float32).reshape(2 * N, 3)
    for rank, (even, uneven, listed) in enumerate(on_ranks(main)):
        expected = torch.cat([(rows + 100 * i)[2 * rank:2 * rank + 2] for i in range(N)])
        assert torch.equal(even, expected)
        assert torch.equal(uneven, torch.cat([torch.full(((i + rank) % 3, 2), 10.0 * i + rank) for i in range(N)]))
        assert [t.tolist() for t in listed] == [[i * N + rank] * (i + 1) for i in range(N)]


def test_all_to_all_single_split_sizes_are_checked():
    def main(pg, rank):
        with pytest.raises(ValueError, match="add up to 4, not the 5 rows"):
            pg.all_to_all_single(torch.empty(5), torch.empty(5), [], [1, 1, 2])
        with pytest.raises(ValueError, match="cannot be split evenly"):
            pg.all_to_all_single(torch.empty(4), torch.empty(4), [], [])
    on_ranks(main)


def test_send_and_recv_in_order_with_non_contiguous_receiver():
    def main(pg, rank):
        if rank == 0:
            works = [pg.send([torch.full((2, 3), float(k))], 1) for k in range(3)]
            for w in works:
                w.wait()
            return None
        if rank == 1:
            received = [torch.empty(3, 2).t() for _ in range(3)]        # non-contiguous targets
            works = [pg.recv([t], 0) for t in received]
            for w in reversed(works):
                w.wait()
            return received
        with pytest.raises(ValueError, match="takes no tags"):
            pg.send([torch.ones(1)], 0, 7)
    received = on_ranks(main)[1]
    assert [float(t[0, 0]) for t in received] == [0.0, 1.0, 2.0]
    assert all(torch.equal(t, torch.full((2, 3), t[0, 0].item())) for t in received)


def test_a_call_torch_marks_synchronous_runs_on_the_callers_thread_when_nothing_is_queued():
    def main(pg, rank):
        sync = opts("AllreduceOptions")
        sync.asyncOp = False
        queued = pg.allreduce([torch.ones(2)])                  # asynchronous: goes to the thread
        queued.wait()
        pg._executor.drain()                                    # the thread has let go of it too
        real_submit, pg._executor.submit = pg._executor.submit, None   # any hand-off would fail
        x = torch.ones(2)
        work = pg.allreduce([x], sync)
        pg._executor.submit = real_submit
        assert work.is_completed() and torch.equal(x, torch.full((2,), float(N))), x
    on_ranks(main)



def test_asynchronous_work_waits_for_peers_without_spinning_while_the_caller_computes(monkeypatch):
    # DDP's backward pass keeps computing while the group's thread waits for the other
    # ranks: that thread sleeps between polls; a caller blocked in a synchronous call spins
    import collectives.transport.waiting as waiting
    yielded = set()
    real_yield = waiting._yield
    monkeypatch.setattr(waiting, "_yield", lambda: (yielded.add(threading.current_thread().name), real_yield()))

    def main(pg, rank):
        sync = opts("AllreduceOptions")
        sync.asyncOp = False
        for options in (None, sync):                         # asynchronous, then synchronous
            if rank == 0:
                time.sleep(0.05)                             # the others wait for rank 0
            x = torch.ones(3)
            pg.allreduce([x], options).wait()
            assert torch.equal(x, torch.full((3,), float(N)))
        return threading.current_thread().name
    callers = on_ranks(main, algorithms={"allreduce": "oneshot"})     # waits on the shared segment
    assert yielded and not any(name.startswith("torch-collectives") for name in yielded), yielded
    assert yielded & set(callers), (yielded, callers)

# -- the engine itself takes any DLPack / array-interface array -----------------------------------
def test_engine_allreduce_writes_into_a_cpu_tensor_in_place():
    def main(comm):
        x = torch.full((4,), float(comm.rank + 1), dtype=torch.float64)
        out = torch.empty(4, dtype=torch.float64)
        comm.allreduce(x, "max", out=out)
        comm.allreduce(x)
        gathered = comm.allgather(torch.tensor([comm.rank], dtype=torch.int32))
        return x, out, gathered
    for x, out, gathered in cc.run_threads(N, main):
        assert torch.equal(x, torch.full((4,), float(sum(range(1, N + 1))), dtype=torch.float64))
        assert torch.equal(out, torch.full((4,), float(N), dtype=torch.float64))
        assert gathered.tolist() == list(range(N))


def test_engine_takes_an_array_interface_object_and_rejects_strided_tensors_clearly():
    class Exported:                                  # a minimal non-NumPy array owner
        def __init__(self, array):
            self.array = array
            self.__array_interface__ = array.__array_interface__

    def main(comm):
        import numpy as np
        data = np.arange(3.0) * (10 if comm.rank == 0 else 1)
        comm.broadcast(Exported(data), root=0)                # written through the exported memory
        with pytest.raises(ValueError, match="C-contiguous"):
            comm.allreduce(torch.ones(4, 2).t())
        return data
    for data in cc.run_threads(2, main):
        assert data.tolist() == [0.0, 10.0, 20.0]


# -- bench.torch -----------------------------------------------------------------------------------
def test_bench_torch_rotates_the_turns_so_no_contender_always_follows_gloo():
    from types import SimpleNamespace

    from bench.torch import rotated_interleaved
    turns = []
    steps = {name: (lambda name=name: turns.append(name)) for name in ("gloo", "collectives", "engine")}
    samples = rotated_interleaved(SimpleNamespace(barrier=lambda: None), steps, rounds=3, repeats=2)
    timed = turns[3:]                                    # after one warm-up call of each
    orders = [timed[i:i + 6:2] for i in range(0, 18, 6)]
    assert orders == [["gloo", "collectives", "engine"], ["collectives", "engine", "gloo"],
                      ["engine", "gloo", "collectives"]]
    assert {name: len(times) for name, times in samples.items()} == {name: 6 for name in steps}

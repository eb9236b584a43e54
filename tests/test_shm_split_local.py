"""Split communicators get a shared segment of their own where their ranks share a node
(in process: every group of ranks, or the ranks of one emulated node), so tensor- and
data-parallel sub-groups run oneshot/twoshot; freed with the sub-communicator."""
import numpy as np

import collectives as cc
from tests.reference import assert_matches, make_input

SHM = {"oneshot", "twoshot", "shm_ring"}


def test_a_split_on_one_node_offers_the_shared_memory_algorithms_and_they_are_exact():
    def body(comm):
        with comm.split(comm.rank % 2) as half:
            assert SHM <= set(half.algorithms("allreduce"))
            segment = half.transport.capabilities.shared_segment
            assert segment.size == half.size == 2
            inputs = [make_input(q, 1001, "float32", "sum") for q in range(half.size)]
            for algorithm in sorted(SHM):
                before = segment.syncs
                got = half.allreduce(inputs[half.rank].copy(), algorithm=algorithm)
                assert segment.syncs > before                 # it went through the segment
                assert_matches(got, inputs, "sum", algorithm)
            return half.allreduce(np.arange(6.0) + comm.rank, algorithm="twoshot")
    results = cc.run_threads(4, body)
    assert np.array_equal(results[0], 2 * np.arange(6.0) + 2)   # ranks 0 and 2
    assert np.array_equal(results[1], 2 * np.arange(6.0) + 4)   # ranks 1 and 3


def test_tensor_and_data_parallel_groups_run_shared_memory_collectives_side_by_side():
    def body(comm):
        tp = comm.split(comm.rank // 2)                 # {0,1} {2,3}
        dp = comm.split(comm.rank % 2)                  # {0,2} {1,3}
        x = np.full(10000, float(comm.rank))
        a = tp.allreduce(x.copy(), algorithm="twoshot", async_op=True)      # in place: a copy each
        b = dp.allreduce(x.copy(), algorithm="oneshot", async_op=True)
        out = a.wait()[0], b.wait()[0]
        tp.free()
        dp.free()
        return out
    assert cc.run_threads(4, body) == [(1.0, 2.0), (1.0, 4.0), (5.0, 2.0), (5.0, 4.0)]


def test_a_split_across_emulated_nodes_has_no_segment_and_one_inside_a_node_has_one():
    def body(comm):
        with comm.split(comm.rank % 2) as across, comm.split(comm.rank // 2) as inside:
            return (across.transport.capabilities.shared_segment is None,
                    SHM & set(across.algorithms("allreduce")),
                    SHM <= set(inside.algorithms("allreduce")),
                    inside.allreduce(np.ones(3), algorithm="oneshot")[0])
    for across_none, across_shm, inside_shm, total in cc.run_threads(4, body, nodes=2):
        assert across_none and not across_shm and inside_shm and total == 2.0


def test_a_split_of_a_world_without_segment_has_none():
    def body(comm):
        with comm.split(0) as sub:
            return sub.transport.capabilities.shared_segment, SHM & set(sub.algorithms("allreduce"))
    assert cc.run_threads(2, body, shm_bytes=0) == [(None, set())] * 2


def test_a_split_of_a_split_inside_one_node_still_gets_a_segment():
    def body(comm):
        with comm.split(comm.rank // 4) as node, node.split(node.rank % 2) as pair:
            return pair.size, SHM <= set(pair.algorithms("allreduce"))
    assert cc.run_threads(8, body, nodes=2) == [(2, True)] * 8


def test_a_split_asked_for_no_segment_gets_none_and_the_point_to_point_duplicate_is_one():
    def body(comm):
        plain = comm.transport.split(0, comm.rank, segment=False)
        shared = comm.transport.split(0, comm.rank)
        return plain.capabilities.shared_segment is None, shared.capabilities.shared_segment is not None
    assert cc.run_threads(3, body) == [(True, True)] * 3


def test_free_tells_the_transport_every_rank_frees_together_and_collection_does_not():
    """comm.free() (or with) frees the transports with together=True: every rank does it
    at the same point, so they may synchronise; garbage collection, which each rank runs at
    its own moment, frees them with together=False (MPI then leaves a split's window to
    MPI_Finalize instead of waiting for the others)."""
    import gc

    from collectives.communicator import Communicator
    from collectives.transport.local import run_threads as spawn
    from collectives.transport.wrapper import TransportWrapper

    frees = {0: [], 1: []}

    class Recorded(TransportWrapper):
        def free(self, together=True):
            frees[self.rank].append(together)
            super().free(together)

    def body(t):
        comm = Communicator(Recorded(t), timeout=20)
        kept, dropped = comm.split(0), comm.split(0)
        del dropped
        gc.collect()
        collected = list(frees[t.rank])
        kept.free()
        explicit = frees[t.rank][len(collected):]
        comm.free()
        return collected, explicit, frees[t.rank][len(collected) + len(explicit):]
    for collected, explicit, world in spawn(2, body):
        assert collected == [False, False]        # the split's transport and its send/recv duplicate
        assert explicit == [True, True] and world == [True, True]

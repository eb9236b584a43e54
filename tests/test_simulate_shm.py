"""The simulator's shared segment: the real shared-memory algorithms on a virtual clock
with a memory bandwidth (transport/simulated_segment.py), timed exactly by their formulas."""
import io

import numpy as np
import pytest

import collectives as cc
from bench import simulate as bench_simulate
from collectives import tuning
from collectives.simulation import Network, simulate

NETWORK = Network(alpha=5e-6, beta=1 / 12.5e9, gamma=1 / 50e9, shm_alpha=2e-6, shm_beta=1 / 20e9)
SIZES = [1 << 10, 1 << 20, 256 << 20]
CALLS = {
    ("allreduce", "oneshot"): lambda comm, x: comm.allreduce(x, algorithm="oneshot"),
    ("allreduce", "twoshot"): lambda comm, x: comm.allreduce(x, algorithm="twoshot"),
    ("reduce_scatter", "shm"): lambda comm, x: comm.reduce_scatter(x, algorithm="shm"),
    ("allgather", "shm"): lambda comm, x: comm.allgather(x[:x.size // comm.size].copy(), algorithm="shm"),
    ("broadcast", "shm"): lambda comm, x: comm.broadcast(x, 1, algorithm="shm"),
    ("reduce", "shm"): lambda comm, x: comm.reduce(x, "sum", 1, algorithm="shm"),
}


def inputs(n, count):
    return [((np.arange(count) * 7 + r * 3) % 11 - 5).astype(np.float32) for r in range(n)]


@pytest.mark.parametrize("collective, algorithm", CALLS)
@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_shared_memory_times_equal_their_formulas(collective, algorithm, n):
    xs = inputs(n, 16 * n)
    call = CALLS[(collective, algorithm)]
    run = simulate(n, lambda comm: call(comm, xs[comm.rank].copy()), NETWORK, SIZES, real_nbytes=xs[0].nbytes)
    for size, seconds in zip(SIZES, run.time):
        assert seconds == pytest.approx(tuning.predict(collective, algorithm, size, n, NETWORK.model), rel=1e-12)
    assert run.messages == 0                     # everything went through the segment


def test_the_formulas_price_syncs_and_passes_with_the_shm_parameters():
    # twoshot on 4 ranks, 1 MiB: 2 sync points, 2.5 MiB passed (3/4 written, the peers'
    # 3/4 read, the reduced 1/4 written, 3/4 read back), 3/4 MiB reduced
    m = float(1 << 20)
    expected = 2 * NETWORK.shm_alpha + 2.5 * m * NETWORK.shm_beta + 0.75 * m * NETWORK.gamma
    assert tuning.predict("allreduce", "twoshot", m, 4, NETWORK.model) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n, g", [(8, 4), (8, 2), (12, 3)])
def test_hierarchical_runs_its_node_stages_through_the_node_segments_on_its_formula(n, g):
    network = Network(alpha=5e-6, beta=1 / 12.5e9, gamma=1 / 50e9, shm_alpha=2e-6, shm_beta=1 / 20e9,
                      ranks_per_node=g, inter_alpha=2e-5, inter_beta=1 / 1e9)
    xs = inputs(n, 16 * n)
    run = simulate(n, lambda comm: comm.allreduce(xs[comm.rank].copy(), algorithm="hierarchical"),
                   network, SIZES, real_nbytes=xs[0].nbytes)
    assert all(np.array_equal(result, sum(xs)) for result in run.results)
    for size, seconds in zip(SIZES, run.time):
        assert seconds == pytest.approx(tuning.predict("allreduce", "hierarchical", size, n, network.model,
                                                       ranks_per_node=g, inter=network.inter,
                                                       shared_memory=True), rel=1e-12)
    # only the across-node ring sends messages: 2 (n/g - 1) per rank
    assert run.messages == n * 2 * (n // g - 1)


@pytest.mark.parametrize("collective, algorithm", CALLS)
def test_simulated_results_equal_the_in_process_transports_bitwise(collective, algorithm):
    n = 5
    xs = [np.random.default_rng([r, n]).standard_normal(40) for r in range(n)]
    call = CALLS[(collective, algorithm)]

    def body(comm):
        return call(comm, xs[comm.rank].copy())
    real = cc.run_threads(n, body)
    simulated = simulate(n, body, NETWORK, [1 << 20], real_nbytes=xs[0].nbytes).results
    for a, b in zip(real, simulated):
        assert (a is None and b is None) or a.tobytes() == b.tobytes()


def test_a_sync_point_waits_for_the_last_rank_to_post_it():
    x = np.ones(64, np.float32)

    def body(comm):
        if comm.rank == 2:                       # rank 2 is busy first: 10 us of reductions
            comm.transport.charge_reduction(np.empty(int(10e-6 / NETWORK.gamma), np.uint8), None, "sum")
        comm.allreduce(x.copy(), algorithm="oneshot")
    run = simulate(3, body, NETWORK, [x.nbytes], real_nbytes=x.nbytes)
    # everyone waits for rank 2: its 10 us, its publish (one pass), the sync, then 3 reads
    passes = x.nbytes * NETWORK.shm_beta
    expected = 10e-6 + passes + NETWORK.shm_alpha + 3 * passes + 2 * x.nbytes * NETWORK.gamma
    assert run.clocks[:, 0] == pytest.approx([expected] * 3, rel=1e-9)


def test_without_shared_memory_the_segment_algorithms_are_not_offered():
    names = simulate(4, lambda comm: comm.algorithms("allreduce"), Network(shared_memory=False)).results[0]
    assert "ring" in names and "oneshot" not in names and "twoshot" not in names
    names = simulate(4, lambda comm: comm.algorithms("allreduce"), Network()).results[0]
    assert "oneshot" in names and "twoshot" in names


def test_bench_simulate_lists_the_shared_memory_algorithms_on_their_formulas():
    out = io.StringIO()
    assert bench_simulate.main(["-n", "8", "--sizes", "1K,16M", "-a", "ring,oneshot,twoshot,shm_ring",
                                "--shm-alpha", "3e-6", "--shm-beta", "1e-10"], out=out) == 0
    rows = [line.split() for line in out.getvalue().splitlines() if line.startswith("  ")]
    assert {row[2] for row in rows} == {"ring", "oneshot", "twoshot", "shm_ring"}
    assert all(row[5] == "1.000" for row in rows)
    assert "sync 3 us" in out.getvalue()
    out = io.StringIO()
    with pytest.raises(SystemExit, match="unknown allreduce algorithm"):
        bench_simulate.main(["-n", "8", "--sizes", "1K", "-a", "twoshot", "--no-shm"], out=out)


def test_all_leaves_shm_ring_out_only_on_large_nodes_and_says_so_only_then():
    valid = ["ring", "oneshot", "twoshot", "shm_ring"]
    assert bench_simulate.all_but_long_rings(valid, bench_simulate.RING_NODE_LIMIT) == valid
    assert bench_simulate.all_but_long_rings(valid, bench_simulate.RING_NODE_LIMIT + 1) == valid[:3]

    def output(*flags):
        out = io.StringIO()
        assert bench_simulate.main(["--sizes", "1K", *flags], out=out) == 0
        return out.getvalue()
    large = output("-n", str(bench_simulate.RING_NODE_LIMIT + 1))
    rows = [line.split() for line in large.splitlines() if line.startswith("  ")]
    assert "# shm_ring left out above" in large and rows and all(row[2] != "shm_ring" for row in rows)
    for flags in (["-n", "4"], ["-n", "4", "--collective", "reduce_scatter"], ["-n", "8", "--ranks-per-node", "1"]):
        assert "left out" not in output(*flags), flags

"""The simulator: real results, and times that follow the messages the schedule sends."""
import io

import numpy as np
import pytest

import collectives as cc
from bench import simulate as bench_simulate
from collectives import tuning
from collectives.errors import TransportError
from collectives.simulation import Network, SizeDependent, simulate

NETWORK = Network(alpha=5e-6, beta=1 / 12.5e9, gamma=1 / 50e9)
SIZES = [1 << 10, 1 << 20, 256 << 20]


def inputs(n, count, dtype=np.float32):
    return [((np.arange(count) * 7 + r * 3) % 11 - 5).astype(dtype) for r in range(n)]


@pytest.mark.parametrize("n", [2, 3, 8, 16])
def test_ring_time_equals_the_formula_on_a_uniform_network(n):
    xs = inputs(n, 16 * n)
    run = simulate(n, lambda comm: comm.allreduce(xs[comm.rank].copy(), algorithm="ring"),
                   NETWORK, SIZES, real_nbytes=xs[0].nbytes)
    for size, seconds in zip(SIZES, run.time):
        assert seconds == pytest.approx(tuning.predict("allreduce", "ring", size, n, NETWORK.model), rel=1e-12)
    assert run.messages == 2 * (n - 1) * n


@pytest.mark.parametrize("algorithm", ["recursive_doubling", "rabenseifner"])
@pytest.mark.parametrize("n", [4, 6, 16])
def test_doubling_and_halving_times_equal_their_formulas(algorithm, n):
    xs = inputs(n, 48 * n)
    run = simulate(n, lambda comm: comm.allreduce(xs[comm.rank].copy(), algorithm=algorithm),
                   NETWORK, SIZES, real_nbytes=xs[0].nbytes)
    for size, seconds in zip(SIZES, run.time):
        assert seconds == pytest.approx(tuning.predict("allreduce", algorithm, size, n, NETWORK.model), rel=1e-9)


CALLS = {
    "allreduce": lambda comm, x, a: comm.allreduce(x, algorithm=a),
    "reduce_scatter": lambda comm, x, a: comm.reduce_scatter(x, algorithm=a),
    "allgather": lambda comm, x, a: comm.allgather(x, algorithm=a),
    "broadcast": lambda comm, x, a: comm.broadcast(x, 2, algorithm=a),
    "reduce": lambda comm, x, a: comm.reduce(x, "sum", 1, algorithm=a),
}


@pytest.mark.parametrize("collective", CALLS)
@pytest.mark.parametrize("n", [5, 8])
def test_simulated_results_equal_the_real_transports_bitwise(collective, n):
    xs = [np.random.default_rng([r, n]).standard_normal(37) for r in range(n)]
    # the simulator has no shared segment: the algorithms of a transport without one
    names = cc.run_threads(1, lambda comm: comm.algorithms(collective), shm_bytes=0)[0]
    for algorithm in names:
        def body(comm):
            return CALLS[collective](comm, xs[comm.rank].copy(), algorithm)
        real = cc.run_threads(n, body)
        simulated = simulate(n, body, NETWORK, [1 << 20], real_nbytes=xs[0].nbytes).results
        for rank in range(n):
            if real[rank] is None:
                assert simulated[rank] is None
            else:
                assert simulated[rank].tobytes() == real[rank].tobytes(), f"{algorithm} rank {rank}"


def test_a_schedule_that_depends_on_the_size_is_refused_with_several_sizes_at_once():
    xs = inputs(4, 64)
    with pytest.raises(SizeDependent):
        simulate(4, lambda comm: comm.allreduce(xs[comm.rank].copy(), algorithm="tree"),
                 NETWORK, SIZES, real_nbytes=xs[0].nbytes)
    one = simulate(4, lambda comm: comm.allreduce(xs[comm.rank].copy(), algorithm="tree"),
                   NETWORK, SIZES[-1:], real_nbytes=xs[0].nbytes)
    assert np.array_equal(one.results[0], sum(x.astype(np.float64) for x in xs))


def test_pipelining_pays_off_for_large_messages():
    n = 8
    xs = inputs(n, 4096)
    times = []
    for chunks in (1, 16):
        run = simulate(n, lambda comm: comm.broadcast(xs[comm.rank].copy(), 0, algorithm="pipeline"),
                       NETWORK, [64 << 20], real_nbytes=xs[0].nbytes, pipeline_chunks=chunks)
        times.append(run.time[0])
    assert times[1] < times[0] / 3          # (n-1 + k-1)/k of a chunk-free chain: 22/16 vs 7


def test_deadlock_raises_instead_of_hanging():
    def body(comm):        # everybody receives first: nobody ever sends
        buf = np.zeros(2)
        comm.transport.sendrecv(None, None, buf, (comm.rank - 1) % comm.size)
    with pytest.raises(TransportError, match="deadlock"):
        simulate(4, body, NETWORK)


def test_a_ranks_own_error_is_reraised():
    def body(comm):
        if comm.rank == 2:
            raise KeyError("rank two broke")
        comm.barrier()
    with pytest.raises(KeyError, match="rank two broke"):
        simulate(4, body, NETWORK)


def test_barrier_aligns_the_clocks():
    def body(comm):
        if comm.rank == 0:
            comm.transport.clock = [c + 1.0 for c in comm.transport.clock]
        comm.barrier()
        return float(comm.transport.clock[0])
    assert simulate(3, body, NETWORK).results == [1.0, 1.0, 1.0]


def test_command_reports_every_algorithm_and_checks_results():
    out = io.StringIO()
    assert bench_simulate.main(["-n", "16", "--sizes", "1K,64M", "--alpha", "5e-6",
                                "--beta", "8e-11", "--gamma", "2e-11"], out=out) == 0
    text = out.getvalue()
    assert "# Out of bounds values : 0 OK" in text
    lines = [line.split() for line in text.splitlines() if line.startswith("  ")]
    assert {(line[0] + line[1], line[2]) for line in lines} == {
        (s, a) for s in ("1KiB", "64MiB")
        for a in ("ring", "tree", "recursive_doubling", "rabenseifner", "oneshot", "twoshot", "shm_ring")}
    exact = [line for line in lines if line[2] in ("ring", "oneshot", "twoshot", "shm_ring")]
    assert all(line[5] == "1.000" for line in exact)           # sim/formula


def test_command_two_level_adds_hierarchical_which_wins_large_messages_across_nodes():
    out = io.StringIO()
    assert bench_simulate.main(["-n", "32", "--sizes", "256M", "-a", "ring,hierarchical",
                                "--alpha", "2e-6", "--beta", "2e-11", "--gamma", "1e-11",
                                "--ranks-per-node", "8", "--inter-alpha", "1e-5", "--inter-beta", "8e-11",
                                "--no-shm"], out=out) == 0
    rows = {line.split()[2]: line.split() for line in out.getvalue().splitlines() if line.startswith("  ")}
    assert rows["hierarchical"][5] == "1.000" and rows["ring"][5] == "1.000"   # both match their formulas
    assert float(rows["hierarchical"][3]) < float(rows["ring"][3]) / 2

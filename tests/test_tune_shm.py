"""The shared-memory costs: fitted by bench.tune like alpha/beta/gamma, stored in the
tuning file, and followed by algorithm="auto"."""
import json

import numpy as np
import pytest

import collectives as cc
from bench import tune
from collectives import tuning
from tests.test_tune import no_tuning_file  # noqa: F401  (autouse: no tuning file in any test here)

SIZES = [8 * 4 ** i for i in range(12)]          # 8 B .. 32 MiB
MESSAGES = {"allreduce": ["ring", "recursive_doubling", "rabenseifner"], "reduce_scatter": ["ring"],
            "allgather": ["ring", "recursive_doubling"]}
SHARED = {"allreduce": ["oneshot", "twoshot", "shm_ring"], "reduce_scatter": ["shm"], "allgather": ["shm"]}
TRUTH = tuning.CostModel(alpha=40e-6, beta=1 / 2e9, gamma=1 / 3e9, shm_alpha=6e-6, shm_beta=1 / 9e9)


def measured_tables(model, n=4, noise=0.0, seed=0, algorithms=(MESSAGES, SHARED)):
    """bench.tune's measured tables as `model` predicts them, with relative noise."""
    rng = np.random.default_rng(seed)
    tables = {}
    for table in algorithms:
        for name, names in table.items():
            entry = tables.setdefault(name, {"world_size": n, "sizes": SIZES, "times": {}, "chunks": {}})
            for algorithm in names:
                entry["times"][algorithm] = [tuning.predict(name, algorithm, size, n, model)
                                             * (1 + noise * rng.standard_normal()) for size in SIZES]
                entry["chunks"][algorithm] = [1] * len(SIZES)
    return tables


def test_fit_recovers_the_sync_and_byte_costs_with_the_message_costs_from_exact_timings():
    rows = [tuning.coefficients("allreduce", a, size, 4) for a in ("ring", "recursive_doubling", "rabenseifner")
            for size in SIZES]
    shared = [tuning.coefficients("allreduce", a, size, 4) for a in ("oneshot", "twoshot", "shm_ring")
              for size in SIZES]
    fitted = tuning.fit(rows, [TRUTH.time(row) for row in rows],
                        shared_rows=shared, shared_times=[TRUTH.shared.time(row) for row in shared])
    for name in ("alpha", "beta", "gamma", "shm_alpha", "shm_beta"):
        assert getattr(fitted, name) == pytest.approx(getattr(TRUTH, name), rel=1e-6), name


def test_bench_tune_fits_message_and_shared_memory_costs_separately():
    fitted = tune.fit_tables(measured_tables(TRUTH), 4)
    for name in ("alpha", "beta", "gamma", "shm_alpha", "shm_beta"):
        assert getattr(fitted, name) == pytest.approx(getattr(TRUTH, name), rel=1e-6), name


def test_the_fit_holds_within_a_few_percent_on_noisy_timings():
    fitted = tune.fit_tables(measured_tables(TRUTH, n=6, noise=0.03), 6)
    for name in ("alpha", "beta", "gamma", "shm_alpha", "shm_beta"):
        assert getattr(fitted, name) == pytest.approx(getattr(TRUTH, name), rel=0.1), name


def test_without_shared_memory_timings_the_default_shm_costs_stay():
    fitted = tune.fit_tables(measured_tables(TRUTH, algorithms=(MESSAGES,)), 4)
    assert fitted.alpha == pytest.approx(TRUTH.alpha, rel=1e-6)
    assert (fitted.shm_alpha, fitted.shm_beta) == (tuning.DEFAULT.shm_alpha, tuning.DEFAULT.shm_beta)
    assert "not measured" in tune.describe_shared(fitted, measured_tables(TRUTH, algorithms=(MESSAGES,)))


def test_the_tuning_file_keeps_the_shm_costs_and_reads_files_written_before_them(tmp_path):
    path = tuning.save(str(tmp_path / "t.json"), TRUTH)
    assert tuning.load(path).model == TRUTH
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"version": 1, "alpha": 1e-5, "beta": 1e-9, "gamma": 2e-9}))
    model = tuning.load(str(old)).model
    assert (model.shm_alpha, model.shm_beta) == (tuning.DEFAULT.shm_alpha, tuning.DEFAULT.shm_beta)
    assert (model.cache_bytes, model.cache_beta, model.cache_gamma) == (
        tuning.DEFAULT.cache_bytes, tuning.DEFAULT.cache_beta, tuning.DEFAULT.cache_gamma)


CANDIDATES = ["ring", "recursive_doubling", "rabenseifner", "oneshot", "twoshot"]


def test_auto_follows_the_fitted_shm_costs():
    cheap = tuning.CostModel(alpha=40e-6, beta=1 / 2e9, gamma=1 / 3e9, shm_alpha=5e-6, shm_beta=1 / 10e9)
    assert tuning.choose("allreduce", CANDIDATES, 8, 4, cheap) == "oneshot"
    assert tuning.choose("allreduce", CANDIDATES, 16 << 20, 4, cheap) == "twoshot"
    # a sync point dearer than a message step, a pass dearer than an MPI byte: messages win
    dear = tuning.CostModel(alpha=40e-6, beta=1 / 2e9, gamma=1 / 3e9, shm_alpha=1e-3, shm_beta=1 / 1e8)
    assert tuning.choose("allreduce", CANDIDATES, 8, 4, dear) == "recursive_doubling"
    assert tuning.choose("allreduce", CANDIDATES, 16 << 20, 4, dear) in ("ring", "rabenseifner")


@pytest.mark.parametrize("model, small, large", [
    (tuning.CostModel(40e-6, 1 / 2e9, 1 / 3e9, 5e-6, 1 / 10e9), "oneshot", "twoshot"),
    (tuning.CostModel(40e-6, 1 / 2e9, 1 / 3e9, 1e-3, 1 / 1e8), "recursive_doubling", "rabenseifner")])
def test_a_communicators_auto_picks_what_the_tuning_files_shm_costs_say(tmp_path, model, small, large):
    tuning.use(tuning.save(str(tmp_path / "t.json"), model))

    def body(comm):
        comm.allreduce(np.ones(2, np.float32))
        comm.allreduce(np.ones(4 << 20, np.float32))
        return [entry["algorithm"] for entry in comm.flight_record()[-2:]]
    picked = cc.run_threads(4, body)[0]
    assert picked == [small, large]


def test_untuned_auto_on_two_ranks_of_a_node_takes_one_shot_for_small_buffers():
    # one-shot is recursive doubling's exchange through the segment instead of MPI; a sync
    # point priced as dear as a message step made auto take recursive doubling at n=2
    def body(comm):
        comm.allreduce(np.ones(2, np.float32))
        comm.allreduce(np.ones(8 << 10, np.float32))
        return [entry["algorithm"] for entry in comm.flight_record()[-2:]]
    assert cc.run_threads(2, body)[0] == ["oneshot", "oneshot"]
    assert tuning.DEFAULT.shm_alpha < tuning.DEFAULT.alpha


def test_untuned_auto_keeps_one_shot_while_the_call_runs_from_the_caches():
    # measured (bench.allreduce, 2026-11-26): one-shot 1.6-2.3x faster than two-shot at
    # 32-64 KiB on 4 ranks, two-shot ahead from 128-256 KiB; at 2 ranks from 256-512 KiB
    def pick(size, n):
        return tuning.choose("allreduce", CANDIDATES + ["shm_ring"], size, n, tuning.DEFAULT)
    assert [pick(size, 4) for size in (8, 32 << 10, 64 << 10, 128 << 10, 16 << 20)] == \
        ["oneshot", "oneshot", "oneshot", "twoshot", "twoshot"]
    assert [pick(size, 2) for size in (8, 256 << 10, 512 << 10)] == ["oneshot", "oneshot", "twoshot"]

    def body(comm):
        comm.allreduce(np.ones(16 << 10, np.float32))       # 64 KiB: two-shot before the cache prices
        return comm.flight_record()[-1]["algorithm"]
    assert cc.run_threads(4, body)[0] == "oneshot"


def test_cache_prices_hold_while_every_ranks_copy_fits_in_cache_bytes():
    model = tuning.CostModel(cache_bytes=1 << 20, cache_beta=1e-11, cache_gamma=2e-11)
    row = tuning.coefficients("allreduce", "oneshot", 256 << 10, 4)
    in_cache = model.shm_alpha * row[0] + row[1] * 1e-11 + row[2] * 2e-11
    assert tuning.predict("allreduce", "oneshot", 256 << 10, 4, model) == pytest.approx(in_cache)
    bigger = tuning.coefficients("allreduce", "oneshot", 512 << 10, 4)
    assert tuning.predict("allreduce", "oneshot", 512 << 10, 4, model) == pytest.approx(model.shared.time(bigger))
    gathered = tuning.coefficients("allgather", "shm", 1 << 20, 4)      # the gathered 1 MiB is all there is
    assert tuning.predict("allgather", "shm", 1 << 20, 4, model) == pytest.approx(
        model.shm_alpha * gathered[0] + gathered[1] * 1e-11)
    no_cache = tuning.CostModel(cache_bytes=0)
    assert tuning.predict("allreduce", "oneshot", 8, 4, no_cache) == pytest.approx(
        no_cache.shared.time(tuning.coefficients("allreduce", "oneshot", 8, 4)))
    ring = tuning.coefficients("allreduce", "ring", 8, 4)                  # messages: no cache prices
    assert tuning.predict("allreduce", "ring", 8, 4, model) == model.time(ring)


def test_the_simulated_memory_has_no_cache_so_schedules_land_on_the_memory_formula():
    from collectives.simulation import Network
    assert Network().model.cache_bytes == 0


def test_a_fit_prices_the_cached_rows_at_the_fixed_cache_rates_and_keeps_them():
    cache = tuning.CostModel(cache_bytes=2 << 20, cache_beta=1 / 40e9, cache_gamma=1 / 20e9)    # not DEFAULT's
    truth = tuning.CostModel(TRUTH.alpha, TRUTH.beta, TRUTH.gamma, TRUTH.shm_alpha, TRUTH.shm_beta,
                             cache.cache_bytes, cache.cache_beta, cache.cache_gamma)
    rows = [tuning.coefficients("allreduce", a, size, 4) for a in ("ring", "rabenseifner") for size in SIZES]
    shared = [(a, size) for a in ("oneshot", "twoshot") for size in SIZES]
    fitted = tuning.fit(rows, [truth.time(row) for row in rows],
                        shared_rows=[tuning.coefficients("allreduce", a, size, 4) for a, size in shared],
                        shared_times=[tuning.predict("allreduce", a, size, 4, truth) for a, size in shared],
                        shared_cached=[truth.in_cache(4 * size) for _, size in shared], cache=cache)
    assert any(truth.in_cache(4 * size) for _, size in shared) and not all(truth.in_cache(4 * s) for _, s in shared)
    for name in ("alpha", "beta", "gamma", "shm_alpha", "shm_beta", "cache_bytes", "cache_beta", "cache_gamma"):
        assert getattr(fitted, name) == pytest.approx(getattr(truth, name), rel=1e-6), name


def test_a_fit_whose_shared_rows_all_ran_from_the_caches_keeps_the_default_byte_cost():
    rows = [tuning.coefficients("allreduce", a, size, 4) for a in ("ring", "rabenseifner") for size in SIZES]
    small = [(a, size) for a in ("oneshot", "twoshot") for size in SIZES[:6]]     # 8 B .. 8 KiB
    fitted = tuning.fit(rows, [TRUTH.time(row) for row in rows],
                        shared_rows=[tuning.coefficients("allreduce", a, size, 4) for a, size in small],
                        shared_times=[tuning.predict("allreduce", a, size, 4, TRUTH) for a, size in small],
                        shared_cached=[True] * len(small))
    assert fitted.shm_alpha == pytest.approx(TRUTH.shm_alpha, rel=1e-6)
    assert fitted.shm_beta == tuning.DEFAULT.shm_beta
    with pytest.raises(ValueError, match="shared_cached for every shared row"):
        tuning.fit(rows, [TRUTH.time(row) for row in rows], shared_rows=[(1, 8, 8)] * 2,
                   shared_times=[1e-5] * 2, shared_cached=[True])


def test_hierarchical_prices_each_node_stage_at_its_own_segment_bytes():
    model = tuning.CostModel(cache_bytes=1 << 20)
    size, g = 512 << 10, 4            # reduce-scatter's 4 copies: 2 MiB, out of cache; all-gather's 512 KiB: in
    stages = sum(tuning.predict(stage, "shm", size, g, model) for stage in ("reduce_scatter", "allgather"))
    across = model.time(tuning.coefficients("allreduce", "ring", size / g, 2))
    assert tuning.predict("allreduce", "hierarchical", size, 8, model, ranks_per_node=g, shared_memory=True) == \
        pytest.approx(stages + across)
    assert model.in_cache(tuning.segment_bytes("allgather", size, g))
    assert not model.in_cache(tuning.segment_bytes("reduce_scatter", size, g))

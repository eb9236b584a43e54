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

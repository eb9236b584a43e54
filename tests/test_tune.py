"""The fitted cost model: coefficients, least squares, the tuning file and "auto"."""
import json
import warnings

import numpy as np
import pytest

from bench import tune
from collectives import tuning
from tests.mpirun import mpirun

ALGORITHMS = {"allreduce": ["ring", "tree", "recursive_doubling", "rabenseifner", "hierarchical"],
              "reduce_scatter": ["ring", "recursive_halving"],
              "allgather": ["ring", "recursive_doubling"],
              "broadcast": ["tree", "pipeline"], "reduce": ["tree", "pipeline", "ring"]}
SIZES = [8 * 4 ** i for i in range(12)]          # 8 B .. 32 MiB


@pytest.fixture(autouse=True)
def no_tuning_file(tmp_path, monkeypatch):
    """Every test starts without a tuning file and leaves none in use."""
    monkeypatch.setenv(tuning.TUNING_ENV, str(tmp_path / "absent.json"))
    tuning.use(None)
    yield
    tuning.use(None)


@pytest.mark.parametrize("collective", ALGORITHMS)
@pytest.mark.parametrize("n", [2, 5, 8, 12])
def test_predict_is_the_coefficients_times_the_parameters(collective, n):
    model = tuning.CostModel(alpha=3e-5, beta=7e-10, gamma=2e-10)
    for algorithm in ALGORITHMS[collective]:
        for size in SIZES:
            a, b, c = tuning.coefficients(collective, algorithm, size, n, model=model)
            expected = a * model.alpha + b * model.beta + c * model.gamma
            assert tuning.predict(collective, algorithm, size, n, model) == pytest.approx(expected, rel=1e-12)


def test_pipelined_coefficients_use_the_chunk_count_the_algorithm_picks():
    model = tuning.CostModel(alpha=1e-6, beta=1e-9, gamma=1e-9)
    k = tuning.algorithm_chunks("broadcast", "pipeline", 1 << 24, 8, model)
    assert k > 1
    a, b, _ = tuning.coefficients("broadcast", "pipeline", 1 << 24, 8, chunks=k)
    assert a == 7 + k - 1 and b == pytest.approx((7 + k - 1) * (1 << 24) / k)
    assert tuning.coefficients("broadcast", "pipeline", 1 << 24, 8, model=model) == (a, b, 0.0)


def synthetic(model, n=4, noise=0.0, seed=0):
    """Coefficient rows and times of every algorithm and size, as `model` predicts them,
    with relative noise of the given size."""
    rng = np.random.default_rng(seed)
    rows, times = [], []
    for collective in ("allreduce", "reduce_scatter", "allgather"):
        for algorithm in ALGORITHMS[collective]:
            for size in SIZES:
                row = tuning.coefficients(collective, algorithm, size, n, model=model)
                rows.append(row)
                times.append(model.time(row) * (1 + noise * rng.standard_normal()))
    return rows, times


def test_fit_recovers_known_alpha_beta_gamma_from_exact_timings():
    truth = tuning.CostModel(alpha=42e-6, beta=1 / 1.7e9, gamma=1 / 3.1e9)
    fitted = tuning.fit(*synthetic(truth))
    assert fitted.alpha == pytest.approx(truth.alpha, rel=1e-6)
    assert fitted.beta == pytest.approx(truth.beta, rel=1e-6)
    assert fitted.gamma == pytest.approx(truth.gamma, rel=1e-6)


def test_fit_recovers_them_within_a_few_percent_from_noisy_timings():
    truth = tuning.CostModel(alpha=25e-6, beta=1 / 2.5e9, gamma=1 / 4e9)
    fitted = tuning.fit(*synthetic(truth, n=6, noise=0.03))
    for name in ("alpha", "beta", "gamma"):
        assert getattr(fitted, name) == pytest.approx(getattr(truth, name), rel=0.1), name


def test_fit_never_returns_a_negative_parameter():
    # times that only depend on size: a free fit would want a negative alpha
    rows = [(2.0, m, 0.5 * m) for m in (1e3, 1e4, 1e5, 1e6)]
    times = [1e-9 * m - 1e-6 for m in (1e3, 1e4, 1e5, 1e6)]
    fitted = tuning.fit(rows, times)
    assert min(fitted.alpha, fitted.beta, fitted.gamma) >= 0


def test_auto_follows_the_measured_table_at_its_world_size_and_the_model_elsewhere(tmp_path):
    model = tuning.CostModel(alpha=1e-5, beta=1e-9, gamma=1e-9)
    measured = {"allreduce": {"world_size": 4, "sizes": [1024, 65536],
                              "times": {"ring": [1.0, 2.0], "tree": [3.0, 1.0]}}}
    path = tuning.save(str(tmp_path / "t.json"), model, measured)
    tuning.use(path)
    assert tuning.current().model == model
    assert tuning.choose("allreduce", ["ring", "tree"], 1000, 4) == "ring"
    assert tuning.choose("allreduce", ["ring", "tree"], 50000, 4) == "tree"
    # another world size, or far outside the measured sizes: the model decides
    for nbytes, n in ((1000, 8), (1 << 30, 4)):
        assert tuning.choose("allreduce", ["ring", "tree"], nbytes, n) == tuning.choose(
            "allreduce", ["ring", "tree"], nbytes, n, model)


def test_tuning_file_is_read_from_the_environment_variable(tmp_path, monkeypatch):
    path = tuning.save(str(tmp_path / "env.json"), tuning.CostModel(1e-6, 2e-9, 3e-9))
    monkeypatch.setenv(tuning.TUNING_ENV, path)
    tuning.use(None)
    assert tuning.current().path == path and tuning.current().model.gamma == 3e-9


def test_without_a_file_the_default_model_stays(tmp_path):
    assert tuning.current().model == tuning.DEFAULT and tuning.current().measured == {}


def test_a_broken_tuning_file_warns_and_falls_back_to_the_default(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps({"version": 1, "alpha": "fast"}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuning.use(str(path))
    assert tuning.current().model == tuning.DEFAULT
    assert any("bench.tune" in str(w.message) for w in caught)


def test_crossovers_are_where_the_predictions_swap():
    model = tuning.CostModel(alpha=25e-6, beta=1 / 2.5e9, gamma=1 / 4e9)
    found = tune.crossovers("allreduce", ["ring", "recursive_doubling"], 8, model)
    assert len(found) == 1
    size, below, above = found[0]
    assert (below, above) == ("recursive_doubling", "ring")
    ring, doubling = (tuning.predict("allreduce", a, size, 8, model) for a in ("ring", "recursive_doubling"))
    assert ring == pytest.approx(doubling, rel=1e-6)


@pytest.mark.mpi
def test_tune_measures_fits_prints_and_writes_the_tuning_file(tmp_path):
    path, png = tmp_path / "tuning.json", tmp_path / "tune.png"
    result = mpirun(2, "-m", "bench.tune", "-e", "8K", "-f", "32", "-n", "2", "-w", "1",
                    "--output", str(path), "--plot", str(png))
    assert result.returncode == 0, result.stdout + result.stderr
    for words in ("# fitted: alpha", "# fitted shared memory: shm_alpha", "measured vs predicted", "model picks",
                  "within 10% of the measured best"):
        assert words in result.stdout, words
    data = json.loads(path.read_text())
    assert data["version"] == 1 and min(data["alpha"], data["beta"], data["gamma"]) >= 0
    assert min(data["shm_alpha"], data["shm_beta"]) >= 0
    table = data["measured"]["allreduce"]
    assert table["world_size"] == 2 and table["sizes"] == [8, 256, 8192]
    assert set(table["times"]) == {"ring", "tree", "recursive_doubling", "rabenseifner", "oneshot", "twoshot",
                                   "shm_ring"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

"""``medalpy bench`` runs and reports the right fields (speed itself lives in the benchmarks)."""

import json
import subprocess
import sys

import numba
import numpy as np
import pytest
from click.testing import CliRunner

from medalpy import bench
from medalpy.cli import main

ROW_FIELDS = {"phase", "batch_size", "implementation", "steps_per_s", "steps_per_s_min",
              "steps_per_s_max", "samples_per_s", "gflops", "fraction_of_peak",
              "mflop_per_step", "mb_per_step", "bound_steps_per_s", "fraction_of_bound"}


def test_bench_json_has_a_row_per_implementation_with_every_field():
    args = ["bench", "--phase", "gradual", "--batch-size", "10", "--repeats", "2",
            "--seconds", "0.01", "--implementation", "cpu-normgrad", "--implementation", "numpy",
            "--threads", "1", "--no-memory", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["gemm_peak_gflops"] > 0 and data["threads"] == 1
    assert data["settings"]["normalise_gradients"] == {"cpu-normgrad": True, "numpy": False}
    rows = data["rows"]
    assert [r["implementation"] for r in rows] == ["cpu-normgrad", "numpy"]
    for row in rows:
        assert set(row) == ROW_FIELDS
        assert row["phase"] == "gradual" and row["batch_size"] == 10
        assert row["steps_per_s_min"] <= row["steps_per_s"] <= row["steps_per_s_max"]
        assert row["samples_per_s"] == pytest.approx(10 * row["steps_per_s"])
        assert row["mflop_per_step"] == pytest.approx(13.84 * 10)


def test_bench_table_output(tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", "--phase", "supervised", "--phase", "stacked", "--batch-size", "3",
            "--repeats", "1", "--seconds", "0.01", "--implementation", "cpu", "--threads", "1",
            "--no-memory", "--output", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "| stacked | 3 |" in result.stdout and "| supervised | 3 |" in result.stdout
    assert len(json.loads(out.read_text())["rows"]) == 2


@pytest.mark.parametrize("phase, mflop_per_sample",
                         [("layer1", 7.84), ("stacked", 10.0), ("gradual", 13.84),
                          ("supervised", 9.196)])
def test_step_flops_match_the_gemm_count(phase, mflop_per_sample):
    assert bench.step_flops(phase, 20) == pytest.approx(mflop_per_sample * 20e6)


@pytest.mark.parametrize("phase", list(bench.PHASES))
def test_medalpy_step_reduces_nothing_to_nan(phase):
    step = bench.medalpy_step("cpu", phase, 4)
    losses = [step() for _ in range(3)]
    assert all(loss == loss and loss > 0 for loss in losses)


@pytest.mark.parametrize("phase", ["gradual", "supervised"])
def test_torch_step_when_torch_is_installed(phase):
    pytest.importorskip("torch")
    step = bench.peers.torch_step(phase, 4)
    assert step() > 0


def test_bench_command_imports_neither_numba_nor_torch():
    code = ("import sys, medalpy.cli.bench; "
            "assert not {'numba', 'torch'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("phase", list(bench.PHASES))
def test_cpu_step_computes_what_the_reference_step_computes(phase):
    # The fast path (cpu kernels, cached views, scalar passing) against the NumPy oracle:
    # the same corrupted batches, losses and updated parameters after a few full steps.
    fast, slow = bench.medalpy_step("cpu", phase, 7), bench.medalpy_step("numpy", phase, 7)
    for _ in range(3):
        assert fast() == pytest.approx(slow(), rel=1e-5)
    for a, b in zip(fast.layers, slow.layers):
        np.testing.assert_allclose(a.W, b.W, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(a.b, b.b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_pass_views_follow_the_batch_length(backend):
    # A pass caches its row views per batch length: a short last batch, then a full one,
    # must give what fresh passes give.
    from medalpy.backprop import Pass
    from medalpy.kernels import get_backend
    from medalpy.network import Network

    k = get_backend(backend)
    rng = np.random.default_rng(3)
    net = Network(12, "float64")
    net.add_encoder(9, rng)
    net.add_encoder(7, rng)
    net.attach_decoder(rng, 0)
    X = rng.random((5, 12))
    shared = Pass(k, net.path(0), 5, net.head, net.dtype)
    for n in (3, 5, 3):
        fresh = Pass(k, net.path(0), n, net.head, net.dtype)
        assert shared.backward(X[:n], X[:n]) == pytest.approx(fresh.backward(X[:n], X[:n]))
        for i in fresh.grads:
            np.testing.assert_array_equal(shared.grads[i][0], fresh.grads[i][0])
            np.testing.assert_array_equal(shared.grads[i][1], fresh.grads[i][1])


def test_step_bytes_of_gradual_phase_2_follow_the_stated_model():
    # 784-1000-1000-784 in float32, batch 20: the uint8 input read and written as floats;
    # per layer its weights and biases read forward (1), again for the error below (1, not
    # for the lowest layer) and read and written with their velocities by the update (4);
    # each level's activations written once and read twice.
    inputs = 20 * 784 * (1 + 4)
    weights = 4 * (5 * (784 * 1000 + 1000) + 6 * (1000 * 1000 + 1000) + 6 * (1000 * 784 + 784))
    levels = 4 * 20 * 3 * (1000 + 1000 + 784)
    assert bench.bounds.step_bytes("gradual", 20) == inputs + weights + levels == 59_305_376
    at_128 = 128 * 784 * 5 + weights + 4 * 128 * 3 * (1000 + 1000 + 784)
    assert bench.bounds.step_bytes("gradual", 128) == at_128
    # With normGrad above 32 rows the weight gradient is stored and read back: two more
    # passes a layer.
    stored = 4 * 2 * (784 * 1000 + 1000 + 1000 * 1000 + 1000 + 1000 * 784 + 784)
    assert bench.bounds.step_bytes("gradual", 128, normalise_gradients=True) == at_128 + stored
    assert bench.bounds.step_bytes("gradual", 20, normalise_gradients=True) == 59_305_376


def test_the_bound_is_the_slower_of_memory_and_arithmetic():
    nbytes, flops = bench.bounds.step_bytes("layer1", 10), bench.step_flops("layer1", 10)
    memory_bound = bench.bounds.bound("layer1", 10, bytes_per_s=nbytes, gemm_flops_per_s=1e15)
    assert memory_bound["bound_steps_per_s"] == pytest.approx(1.0)
    compute_bound = bench.bounds.bound("layer1", 10, bytes_per_s=1e15, gemm_flops_per_s=flops)
    assert compute_bound["bound_steps_per_s"] == pytest.approx(1.0)
    assert bench.bounds.bandwidth(1 << 20, threads=1, repeats=1) > 1e8  # > 0.1 GB/s


def test_a_peak_outlasts_a_slow_start():
    """A GEMM peak or a bandwidth is the best of repetitions that go on for at least a set time, so
    a slow patch at the start (another library's threads still spinning) cannot set it."""
    import time

    from medalpy.bench.machine import best_seconds

    calls = []

    def call():  # slow for its first 0.2 s of calls, then fast
        calls.append(None)
        time.sleep(0.05 if len(calls) <= 4 else 0.001)

    best = best_seconds(call, repeats=3, min_seconds=0.3)
    assert best < 0.02 and len(calls) > 4
    calls.clear()
    assert best_seconds(call, repeats=3, min_seconds=0.0) >= 0.05  # the slow start alone


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two Numba threads")
def test_contention_runs_every_load_and_mode_and_leaves_no_process_behind(monkeypatch):
    from medalpy.kernels import lanes

    before = (lanes.LANES, lanes.READY, numba.get_num_threads())
    started = []
    start_load = bench.contention.start_load
    monkeypatch.setattr(bench.contention, "start_load",
                        lambda kind: started.append(start_load(kind)) or started[-1])
    result = bench.contention.run_contention(steps=5, threads=2)
    assert [(r["load"], r["mode"]) for r in result["rows"]] == [
        (load or "none", mode) for load in bench.contention.LOADS
        for mode in bench.contention.MODES]
    quiet = result["rows"][0]["seconds"]
    assert all(r["seconds"] > 0 and r["ratio"] == r["seconds"] / quiet for r in result["rows"])
    assert len(started) == 2 and all(child.poll() is not None for child in started)
    assert (lanes.LANES, lanes.READY, numba.get_num_threads()) == before  # all restored
    assert "| memory |" in bench.contention.format_contention(result)


def test_an_implementation_whose_library_is_missing_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(bench, "available_implementations", lambda: ["cpu", "numpy"])
    result = CliRunner().invoke(main, ["bench", "--implementation", "jax", "--no-memory"])
    assert result.exit_code == 2
    assert "--implementation jax: its library is not installed" in result.output

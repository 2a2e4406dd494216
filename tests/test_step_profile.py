"""benchmarks/step_profile.py: every backend call of the bench's step is timed."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
step_profile = pytest.importorskip("step_profile")


def test_the_profile_splits_the_step_among_its_kernels():
    row = step_profile.profile("layer1", 10, rounds=1, steps=3, threads=1)
    kernels = row["kernels_ms"]
    # The step's products and its fused gradient + update (no normGrad) are all there.
    assert {"matmul", "sgd_update_product", "add_bias_sigmoid"} <= set(kernels)
    assert "matmul_tn" not in kernels  # the weight gradient is never stored
    assert all(ms > 0 for name, ms in kernels.items() if name != "python")
    assert "| layer1 | 10 |" in step_profile.table([row])

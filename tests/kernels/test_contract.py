"""The backend contract of ``medalpy.kernels`` (its docstring's table): every backend offers
every kernel with the reference's signature, and the noise kinds' kernels are in it. The
cuda backend is checked the same way on the simulator (``cuda_sim_cases.py``)."""

import inspect

import pytest

from medalpy.corruption import NOISE_TYPES
from medalpy.kernels import CONTRACT, cpu
from medalpy.kernels import reference as ref

#: Public functions of the reference that are helpers of its own, not kernels.
REFERENCE_HELPERS = {"splitmix64", "noise_row_keys", "unit_hashes", "unit_uniforms",
                     "keep_mask", "gaussian_noise", "sigmoid", "softplus"}


def _public_functions(module):
    return {n for n, f in vars(module).items()
            if inspect.isfunction(f) and not n.startswith("_")
            and f.__module__ == module.__name__}


def test_the_contract_is_what_the_reference_offers():
    assert set(CONTRACT) == _public_functions(ref) - REFERENCE_HELPERS


def test_every_noise_kind_is_a_kernel_of_the_contract():
    assert {kind.kernel for kind in NOISE_TYPES.values()} == {
        name for name in CONTRACT if name.startswith("gather_")}


@pytest.mark.parametrize("backend", [ref, cpu], ids=lambda b: b.NAME)
def test_backend_offers_every_kernel_with_the_reference_signature(backend):
    for name in CONTRACT:
        assert callable(getattr(backend, name, None)), name
        assert inspect.signature(getattr(backend, name)) == inspect.signature(
            getattr(ref, name)), name

"""Property-based tests (Hypothesis): whatever settings or bytes a user gives, the answer is
a configuration or one ConfigError / DataError naming the culprit, never another exception
(which the command line would show as a traceback)."""

import math

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from medalpy.data.idx import idx_bytes, parse_idx  # noqa: E402
from medalpy.errors import ConfigError, DataError  # noqa: E402
from medalpy.run import FIELDS, make_config  # noqa: E402

VALUES = st.one_of(
    st.sampled_from([math.inf, -math.inf, math.nan, 0.0, -1.0, 0.5, 1.0, 1e30, 0, -1, 1, 2]),
    st.none(), st.booleans(), st.integers(-10**6, 10**6),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.sampled_from(["mnist-sample", "gradual", "hybrid", "paper", "medal", "cpu", "masking",
                     "gaussian", "40,,30", "100,50", "updates", "epochs", "float64"]),
    st.lists(st.integers(-5, 3000), max_size=4),
    st.dictionaries(st.sampled_from(["finetune", "gradual", "1:layer", "lr", "x"]),
                    st.dictionaries(st.sampled_from(["lr", "noise", "batch_size", "bogus"]),
                                    st.one_of(st.floats(), st.integers(-3, 50), st.text(max_size=3)),
                                    max_size=2), max_size=2))


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(FIELDS)), VALUES, max_size=4))
def test_any_settings_give_a_config_or_one_config_error(values):
    try:
        cfg = make_config(values)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    # What is accepted is in range: finite numbers, a positive learning rate, a schedule.
    for name in ("lr", "momentum", "weight_decay", "noise"):
        assert math.isfinite(getattr(cfg, name)), name
    assert cfg.lr > 0 and 0 <= cfg.momentum < 1 and cfg.weight_decay >= 0
    assert all(isinstance(w, int) and w >= 1 for w in cfg.layers)
    assert (cfg.method == "hybrid") == (cfg.fraction is not None)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_are_an_idx_array_or_one_data_error(raw):
    try:
        parse_idx(raw, "random.idx")
    except DataError as exc:
        assert "random.idx" in str(exc)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4), st.data())
def test_canonical_idx_bytes_read_back_and_truncations_are_refused(ndim, data):
    import numpy as np

    shape = tuple(data.draw(st.integers(1, 4)) for _ in range(ndim))
    array = np.arange(int(np.prod(shape)), dtype=np.uint8).reshape(shape)
    raw = idx_bytes(array)
    np.testing.assert_array_equal(parse_idx(raw, "ok.idx"), array)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(DataError, match="cut.idx"):
        parse_idx(raw[:cut], "cut.idx")

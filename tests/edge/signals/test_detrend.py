"""Smoothness-priors detrending: O(N) banded solve vs the dense O(N^3) formula."""
from __future__ import annotations

import numpy as np
import pytest
from reference.rppg import detrend_dense

from edge.signals.detrend import signal_detrend
from firmware_bridge.errors import BadInputError, ConfigError


@pytest.mark.parametrize("n", [3, 4, 5, 17, 200, 600])
@pytest.mark.parametrize("lam", [1.0, 10.0, 100.0, 300.0])
def test_matches_dense_inverse(n, lam):
    """Banded L D L^T vs np.linalg.inv of the N x N matrix: within 1e-8 of the input's peak.

    (Measured: about 1e-12 at lam=100; the dense inverse is the less accurate of the two, its
    error grows with the condition number, about 16 lam^2.)
    """
    rng = np.random.default_rng(n)
    z = rng.normal(size=n).cumsum() + 80.0
    got = signal_detrend(z, lam)
    ref = detrend_dense(z, lam)
    assert got.shape == (n,) and got.dtype == np.float64
    assert np.max(np.abs(got - ref)) <= 1e-8 * np.max(np.abs(z))


def test_removes_slow_trend_and_keeps_1_hz():
    fs = 30.0
    t = np.arange(int(60 * fs)) / fs
    slow = 5.0 * t / 60 + 3.0 * np.sin(2 * np.pi * 0.05 * t) + 40.0
    pulse = np.sin(2 * np.pi * 1.0 * t)
    # The filter is linear, so trend and pulse can be judged separately.
    assert np.max(np.abs(signal_detrend(slow, 100.0))) < 0.01 * 3.0
    kept = signal_detrend(pulse, 100.0)
    mid = slice(len(t) // 6, -len(t) // 6)
    gain = np.dot(kept[mid], pulse[mid]) / np.dot(pulse[mid], pulse[mid])
    assert 0.9 < gain <= 1.0
    both = signal_detrend(slow + pulse, 100.0)
    assert np.sqrt(np.mean((both[mid] - pulse[mid]) ** 2)) < 0.06


def test_linear_trend_is_removed_exactly():
    """A straight line is in the null space of D2: its trend is itself, for any length."""
    for n in (3, 10, 1000):
        z = 2.0 + 0.5 * np.arange(n)
        np.testing.assert_allclose(signal_detrend(z, 50.0), 0.0, atol=1e-9 * z.max())


def test_long_signal_linear_memory():
    """Ten minutes at 1 kHz (600,000 samples): the dense form would need 2.9 TB."""
    n = 600_000
    z = np.linspace(0.0, 100.0, n) + np.sin(np.arange(n) * 0.5)
    out = signal_detrend(z, 100.0)
    assert np.isfinite(out).all()
    assert abs(out.mean()) < 1e-3


@pytest.mark.parametrize(
    "x, lam, exc, match",
    [
        (np.zeros(2), 100.0, BadInputError, "at least 3"),
        (np.zeros((4, 4)), 100.0, BadInputError, "1-D"),
        (np.array([1.0, np.nan, 2.0, 3.0]), 100.0, BadInputError, "NaN"),
        (["x", "y", "z"], 100.0, BadInputError, "real numeric"),
        (np.zeros(10), 0.0, ConfigError, "lam"),
        (np.zeros(10), float("nan"), ConfigError, "lam"),
        (np.zeros(10), -1.0, ConfigError, "lam"),
    ],
)
def test_bad_input_raises(x, lam, exc, match):
    with pytest.raises(exc, match=match):
        signal_detrend(x, lam)

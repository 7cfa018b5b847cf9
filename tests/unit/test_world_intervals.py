"""Intervals of the fidelity benchmark: Wilson shares and the bootstrap of the fusion drop ratio."""
import math

import numpy as np
import pytest

from testbed.world import intervals


def test_wilson_matches_textbook_values_and_brackets_the_share():
    low, high = intervals.wilson(0, 10, level=0.95)  # z = 1.96: [0, z^2 / (n + z^2)]
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(1.96 ** 2 / (10 + 1.96 ** 2), abs=1e-3)
    low, high = intervals.wilson(6, 48)  # 90 % (z 1.645), by hand: 0.0660 .. 0.2240
    assert low < 6 / 48 < high and low == pytest.approx(0.0660, abs=1e-3) and high == pytest.approx(0.2240, abs=1e-3)
    assert intervals.wilson(20, 20)[1] == pytest.approx(1.0)
    narrow, wide = intervals.wilson(50, 100), intervals.wilson(5, 10)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def test_binding_interval_reads_a_binding_result_as_counts():
    assert intervals.binding_interval({"right": 0.125, "bleed": 0.0, "empty": 0.0, "boxes": 48.0}) == \
        intervals.wilson(6, 48)


@pytest.mark.parametrize("bad", [(3, 2), (-1, 5), (0, 0)])
def test_wilson_refuses_impossible_counts(bad):
    with pytest.raises(ValueError, match="successes"):
        intervals.wilson(*bad)


def test_drop_ratio_interval_finds_a_clear_win_and_a_clear_tie():
    rng = np.random.default_rng(1)
    single = rng.uniform(0.6, 1.0, size=(8, 16))  # (concepts, images)
    win = intervals.drop_ratio_interval(single, single - 0.02, single - 0.2, draws=500)
    assert win["ratio"] == pytest.approx(0.1) and win["low"] == pytest.approx(0.1) and win["meets"] == 1.0
    noise = rng.normal(0, 0.15, size=single.shape)
    tie = intervals.drop_ratio_interval(single, single - 0.1 + noise, single - 0.1 - noise, draws=500)
    assert tie["low"] < 1.0 < tie["high"] and tie["meets"] < 0.5


def test_drop_ratio_interval_is_deterministic_and_counts_no_average_drop_as_no_evidence():
    single = np.full((4, 4), 0.75)
    a = intervals.drop_ratio_interval(single, single - 0.05, single, draws=100, seed=3)
    assert math.isinf(a["ratio"]) and a["meets"] == 0.0
    rng = np.random.default_rng(0)
    s, g, v = (rng.uniform(size=(4, 6)) for _ in range(3))
    assert intervals.drop_ratio_interval(s, g, v, seed=7) == intervals.drop_ratio_interval(s, g, v, seed=7)


def test_drop_ratio_interval_refuses_unpaired_grids():
    with pytest.raises(ValueError, match=r"equal \[concepts\]\[images\].*\(2, 3\)"):
        intervals.drop_ratio_interval(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 4)))

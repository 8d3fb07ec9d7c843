"""IQM and bootstrap intervals: against numpy, deterministic, NaN seeds left out."""

import numpy as np
import pytest

from pgjax import stats


def test_iqm_is_the_mean_of_the_middle_half():
    x = np.array([100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -100.0])
    assert stats.iqm(x) == pytest.approx(np.mean(np.sort(x)[2:6]))
    cols = np.stack([x, 2 * x], 1)
    np.testing.assert_allclose(stats.iqm(cols, axis=0), [3.5, 7.0])


def test_intervals_are_deterministic_and_leave_the_global_rng_alone():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(16, 3)) + np.array([0.0, 1.0, 2.0])
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    a = stats.iqm_intervals(scores, reps=500)
    after = np.random.random()
    b = stats.iqm_intervals(scores, reps=500)
    assert before == after  # the caller's global RNG stream is untouched
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert (a[1][0] < a[0]).all() and (a[0] < a[1][1]).all()
    assert stats.score_summary(scores[:, 0]) == stats.score_summary(scores[:, 0])


def test_nan_seeds_are_left_out_and_all_nan_is_nan():
    scores = np.array([[1.0, np.nan], [2.0, np.nan], [3.0, np.nan], [np.nan, np.nan]])
    point, ci = stats.iqm_intervals(scores, reps=200)
    assert point[0] == pytest.approx(2.0) and np.isnan(point[1]) and np.isnan(ci[:, 1]).all()
    assert stats.nanmean([1.0, np.nan, 3.0]) == 2.0 and np.isnan(stats.nanmean([np.nan]))


def test_first_reaching_uses_the_iqm_of_finite_seeds():
    steps = np.array([100, 200, 300])
    returns = np.array([[np.nan, 5.0, 9.0], [1.0, 6.0, 9.0], [1.0, 100.0, 9.0], [1.0, 7.0, 9.0]])
    assert stats.first_reaching(steps, returns, 6.0) == 200  # IQM of (5, 6, 7, 100) = 6.5
    assert stats.first_reaching(steps, returns, 9.0) == 300
    assert stats.first_reaching(steps, returns, 10.0) is None


def test_one_seed_interval_is_the_score_as_resampled():
    scores = np.array([[3.25, -1.5, 7.0]])
    point, ci = stats.iqm_intervals(scores)
    np.testing.assert_array_equal(point, scores[0])
    np.testing.assert_array_equal(ci, [scores[0], scores[0]])
    from rliable import library as rly  # what the resampling gives, for comparison

    rl_point, rl_ci = rly.get_interval_estimates({"x": scores}, lambda x: stats.iqm(x, axis=0),
                                                 reps=200)
    np.testing.assert_array_equal(point, rl_point["x"])
    np.testing.assert_array_equal(ci, rl_ci["x"])

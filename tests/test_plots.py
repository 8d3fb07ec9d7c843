import warnings

import numpy as np

from pgjax.plots import plot_curve


def test_curve_with_an_update_without_finished_episodes_plots_without_warnings(tmp_path):
    # Update 1: no seed finished an episode (NaN everywhere); update 2: one seed did.
    returns = np.array([[1.0, np.nan, 3.0], [2.0, np.nan, np.nan]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_curve(tmp_path / "curve.png", np.array([10, 20, 30]), returns, "t")
    assert (tmp_path / "curve.png").stat().st_size > 1000

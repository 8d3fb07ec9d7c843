import warnings
from pathlib import Path

import numpy as np
import pytest

from pgjax import plots
from pgjax.plots import plot_curve, pyplot, save


def test_curve_with_an_update_without_finished_episodes_plots_without_warnings(tmp_path):
    # Update 1: no seed finished an episode (NaN everywhere); update 2: one seed did.
    returns = np.array([[1.0, np.nan, 3.0], [2.0, np.nan, np.nan]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_curve(tmp_path / "curve.png", np.array([10, 20, 30]), returns, "t")
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_the_same_figure_saves_to_the_same_svg_bytes(tmp_path):
    plt = pyplot()
    for name in ("a.svg", "b.svg"):
        fig, ax = plt.subplots()
        ax.fill_between([0, 1, 2], [0, 1, 0], [1, 2, 1], alpha=0.3)
        save(fig, tmp_path / name)
        plt.close(fig)
    text = (tmp_path / "a.svg").read_text()
    assert "clip-path" in text and "<dc:date>" not in text
    assert (tmp_path / "a.svg").read_bytes() == (tmp_path / "b.svg").read_bytes()


@pytest.mark.parametrize("out, names", [
    ("figures/spaceinvaders-ent0.03-partial", ["spaceinvaders-ent0.03-partial.png",
                                               "spaceinvaders-ent0.03-partial.svg"]),
    ("curves.png", ["curves.png", "curves.svg"]),
    ("curves.SVG", ["curves.png", "curves.svg"]),
    ("lr0.01", ["lr0.01.png", "lr0.01.svg"]),
])
def test_figure_paths_keep_dots_in_the_name(out, names):
    assert [p.name for p in plots.figure_paths(Path(out))] == names


@pytest.mark.parametrize("out", ["x.jpg", "figures/curves.PDF"])
def test_another_image_format_is_refused_in_one_line(out):
    with pytest.raises(ValueError, match="figures are written as PNG and SVG; give the path "
                                         "without a suffix"):
        plots.figure_paths(Path(out))

"""The label-issue grid: every cell's title sits in its own band, clear of the images of the row above."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402

from rmd_ray.data.label_issues import grid_figure  # noqa: E402


def _suspects(n: int) -> pa.Table:
    return pa.table({
        "id": [str(i) for i in range(n)],
        "rank": list(range(1, n + 1)),
        "rmd": np.linspace(40.0, 10.0, n),
        "given_class": ["a long class name here"] * n,
        "nearest_name": ["another long class name"] * n,
        "label_disagrees": [i % 2 == 0 for i in range(n)],
    })


@pytest.mark.parametrize(("n", "columns", "size"), [(12, 4, 28), (32, 8, 28), (10, 5, 224)])
def test_titles_do_not_overlap_the_images_above(n, columns, size):
    rng = np.random.default_rng(0)
    images = {str(i): rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for i in range(n)}
    fig = grid_figure(_suspects(n), images, columns=columns)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        axes = np.array(fig.axes).reshape(-1, columns)
        assert axes.shape[0] == -(-n // columns)
        suptitle = fig._suptitle.get_window_extent(renderer)
        for r in range(axes.shape[0]):
            for c in range(columns):
                title = axes[r, c].title.get_window_extent(renderer)
                image = axes[r, c].get_window_extent(renderer)
                assert title.y0 >= image.y1 - 1, (r, c)  # the title is above its own image
                # display coordinates: y grows upwards, so "above" means a larger y
                ceiling = suptitle.y0 if r == 0 else axes[r - 1, c].get_window_extent(renderer).y0
                assert title.y1 <= ceiling + 0.5, (r, c, title.y1, ceiling)
                assert not title.overlaps(axes[r - 1, c].get_window_extent(renderer)) if r else True
    finally:
        plt.close(fig)

"""rmd_ray.data.label_issues: the three rankings over a scores parts directory (combined ranks every
row against all parts, not within a part), the nearest class in the output, the validation, the grid
layout (titles clear of the images above), and a Parquet source read for the grid only in the row
groups that hold a suspect."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from rmd_ray.data.label_issues import find_label_issues, grid_figure, rank_suspects  # noqa: E402
from rmd_ray.io import storage  # noqa: E402
from rmd_ray.io.parts import write_manifest  # noqa: E402

CLASSES = ["cat", "dog", "fox"]
# six samples: rmd, margin, nearest class. By hand, the ranks of rmd are 6 5 4 3 2 1 (a..f) and of
# margin 1 2 3 6 5 4, so combined = (rank rmd + rank margin) / 12 = 7/12 for a, b, c and 9/12, 7/12, 5/12
# for d, e, f: d first, then a tie of a, b, c, e broken by id.
ROWS = {
    "id": ["a", "b", "c", "d", "e", "f"],
    "label": [0, 0, 1, 1, 2, 2],
    "rmd": [60.0, 50.0, 40.0, 30.0, 20.0, 10.0],
    "md": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    "weight": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
    "nearest_class": [0, 0, 1, 0, 1, 2],
    "margin": [-5.0, -4.0, -3.0, 9.0, 2.0, 1.0],
}


def _table(rows=ROWS):
    return pa.table({**rows, "label": pa.array(rows["label"], pa.int64()),
                     "nearest_class": pa.array(rows["nearest_class"], pa.int64())})


@pytest.fixture
def scores_dir(tmp_path):
    """The six rows in two parts (a, b, c | d, e, f), the layout `rmd-ray score` writes."""
    out = tmp_path / "scores.parquet"
    out.mkdir()
    table = _table()
    pq.write_table(table.slice(0, 3), out / "part-00000.parquet")
    pq.write_table(table.slice(3, 3), out / "part-00001.parquet")
    write_manifest(str(out), ["part-00000.parquet", "part-00001.parquet"], rows=6, metadata={"classes": CLASSES})
    return out


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "images"
    for i, sample in enumerate(ROWS["id"]):
        (root / "x").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4, 3), 40 * i, np.uint8)).save(root / "x" / f"{sample}.png")
    return root


@pytest.mark.parametrize(
    "score, order",
    [("rmd", ["a", "b", "c"]), ("margin", ["d", "e", "f"]), ("combined", ["d", "a", "b"])],
)
def test_rank_suspects_orders_by_the_named_score(score, order):
    top = rank_suspects(_table(), top=3, classes=CLASSES, score=score)
    assert top.column("id").to_pylist() == order
    assert top.column("rank").to_pylist() == [1, 2, 3]
    if score == "combined":
        np.testing.assert_allclose(top.column("score").to_numpy(), [9 / 12, 7 / 12, 7 / 12])
    # the nearest class stays in the output, by index and by name, and flags disagreement
    d = rank_suspects(_table(), top=1, classes=CLASSES, score="margin").to_pylist()[0]
    assert (d["given_class"], d["nearest_class"], d["nearest_name"], d["label_disagrees"]) == ("dog", 0, "cat", True)


def test_find_label_issues_combined_ranks_across_parts(scores_dir, image_folder, tmp_path):
    # ids are read from the folder source as x/<id>.png: rename the scores' ids to match
    for part in ("part-00000.parquet", "part-00001.parquet"):
        table = pq.read_table(scores_dir / part)
        ids = pa.array([f"x/{i}.png" for i in table.column("id").to_pylist()])
        pq.write_table(table.set_column(0, "id", ids), scores_dir / part)
    report = find_label_issues(scores_dir, source=f"folder:{image_folder}", top=4, output_dir=tmp_path / "out")
    got = pq.read_table(report.table_path)
    # ranked within each part alone, d, e, f would tie a, b, c; against all six: d 9/12, then a b c e at 7/12
    assert got.column("id").to_pylist() == ["x/d.png", "x/a.png", "x/b.png", "x/c.png"]
    np.testing.assert_allclose(got.column("score").to_numpy(), [9 / 12, 7 / 12, 7 / 12, 7 / 12])
    assert got.column("nearest_name").to_pylist() == ["cat", "cat", "cat", "dog"]
    assert storage.read_bytes(report.grid_path)[:4] == b"\x89PNG"
    assert report.n_written == 4
    by_margin = find_label_issues(scores_dir, source=f"folder:{image_folder}", top=2, output_dir=tmp_path / "o3",
                                  score="margin")
    assert pq.read_table(by_margin.table_path).column("id").to_pylist() == ["x/d.png", "x/e.png"]
    by_rmd = find_label_issues(scores_dir, source=f"folder:{image_folder}", top=2, output_dir=tmp_path / "o2",
                               score="rmd")
    assert pq.read_table(by_rmd.table_path).column("id").to_pylist() == ["x/a.png", "x/b.png"]


class _RecordedFile(io.FileIO):
    """A local file that records the (path, offset, size) of every read."""

    def __init__(self, path, reads):
        super().__init__(path, "rb")
        self.path, self.reads = path, reads

    def read(self, size=-1):
        offset, data = self.tell(), super().read(size)
        self.reads.append((self.path, offset, len(data)))
        return data

    def readinto(self, buffer):
        offset, n = self.tell(), super().readinto(buffer)
        self.reads.append((self.path, offset, n))
        return n


def _image_chunks(path) -> list[tuple[int, int]]:
    """(start, stop) byte range of the ``image`` column chunk of each row group."""
    meta = pq.ParquetFile(path).metadata
    leaf = [meta.schema.column(i).path for i in range(meta.num_columns)].index("image")
    ranges = []
    for g in range(meta.num_row_groups):
        chunk = meta.row_group(g).column(leaf)
        start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
        ranges.append((start, start + chunk.total_compressed_size))
    return ranges


def test_the_grid_reads_image_columns_only_of_row_groups_holding_a_suspect(scores_dir, tmp_path, monkeypatch):
    # a Parquet source of 60 rows in 12 row groups of 5; the scored ids a..f sit in groups 1, 3, 4, 7, 8, 11
    rng = np.random.default_rng(0)
    where = dict(zip(ROWS["id"], [7, 19, 23, 38, 44, 57]))
    ids = [f"r{i:02d}" for i in range(60)]
    for sample, row in where.items():
        ids[row] = sample
    pixels = [rng.integers(0, 255, (48, 48, 3), dtype=np.uint8) for _ in ids]  # ~7 KB PNGs, 12 per 64 KiB
    pngs = []
    for p in pixels:
        buffer = io.BytesIO()
        Image.fromarray(p).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    source = tmp_path / "train.parquet"
    pq.write_table(pa.table({"id": ids, "label": pa.array(np.arange(60) % 3, pa.int16()), "image": pngs}),
                   source, row_group_size=5)
    reads = []
    monkeypatch.setattr(storage, "open_input", lambda uri: pa.PythonFile(_RecordedFile(str(uri), reads), mode="r"))
    report = find_label_issues(scores_dir, source=f"parquet:{source}", top=2, output_dir=tmp_path / "out",
                               score="margin")  # d and e: row groups 7 and 8
    assert pq.read_table(report.table_path).column("id").to_pylist() == ["d", "e"]
    # pyarrow opens a file by reading its last 64 KiB (the footer, plus here the last row group's images,
    # undecoded); every other read is a column chunk it asked for
    size = source.stat().st_size
    chunks = [(o, n) for path, o, n in reads if path == str(source) and n and not (o + n == size and o >= size - 65536)]
    touched = [g for g, (start, stop) in enumerate(_image_chunks(source))
               if any(offset < stop and start < offset + n for offset, n in chunks)]
    assert touched == [7, 8]
    from rmd_ray.data.locations import fetch_rows_by_id

    rows = fetch_rows_by_id(f"parquet:{source}", ["f", "a", "zz"]).sort_by("id")
    assert rows.column("id").to_pylist() == ["a", "f"]
    assert rows.column("label").to_pylist() == [7 % 3, 57 % 3]
    assert rows.column("image").to_pylist() == [pngs[7], pngs[57]]


def test_find_label_issues_validation(scores_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown label-issue score 'loss'; valid names: combined, margin, rmd"):
        find_label_issues(scores_dir, source="folder:/x", output_dir=tmp_path, score="loss")
    with pytest.raises(ValueError, match="not found; run `rmd-ray score` first"):
        find_label_issues(tmp_path / "none.parquet", source="folder:/x", output_dir=tmp_path)
    old = tmp_path / "old.parquet"
    pq.write_table(_table().drop(["margin"]), old)
    with pytest.raises(ValueError, match="lacks the margin column needed by --score combined: rescore"):
        find_label_issues(old, source="folder:/x", output_dir=tmp_path)  # the default ranking
    write_manifest(str(scores_dir), ["part-00000.parquet", "part-00001.parquet"], rows=5, metadata={})
    with pytest.raises(ValueError, match="hold more rows than their manifest's 5: rescore"):
        find_label_issues(scores_dir, source="folder:/x", output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"lacks columns \['md', 'weight'\]"):
        rank_suspects(_table().drop(["md", "weight"]), top=1, classes=CLASSES)
    with pytest.raises(ValueError, match="top must be an int >= 1"):
        rank_suspects(_table(), top=0, classes=CLASSES)


# ------------------------------------------------ the grid: titles clear of the images above


def _grid_suspects(n: int) -> pa.Table:
    return pa.table({
        "id": [str(i) for i in range(n)],
        "rank": list(range(1, n + 1)),
        "score": np.linspace(40.0, 10.0, n),
        "given_class": ["a long class name here"] * n,
        "nearest_name": ["another long class name"] * n,
        "label_disagrees": [i % 2 == 0 for i in range(n)],
    })


@pytest.mark.parametrize(("n", "columns", "size"), [(12, 4, 28), (32, 8, 28), (10, 5, 224)])
def test_titles_do_not_overlap_the_images_above(n, columns, size):
    rng = np.random.default_rng(0)
    images = {str(i): rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for i in range(n)}
    fig = grid_figure(_grid_suspects(n), images, columns=columns, score="combined")
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

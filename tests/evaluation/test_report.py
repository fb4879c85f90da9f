"""rmd_ray.evaluation.report: every section's figure and heading when all inputs are given, the notes
when they are not, a self-contained page, the gallery's choice of images, validation."""

from __future__ import annotations

import base64
import io
import json
import re
import stat
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _eval_helpers import synthetic_run, write_predictions
from PIL import Image

from rmd_ray.evaluation.evaluate import DuplicatePredictionsWarning, evaluate_run
from rmd_ray.evaluation.proxy import difficulty_proxy_test
from rmd_ray.evaluation.report import SECTIONS, build_report, format_hparams, gallery_selection
from rmd_ray.evaluation.report.gallery import _label_decimals
from rmd_ray.io.storage import write_parquet_atomic


def _report(**kwargs) -> Path:
    """build_report returns where the page went (a local path or a URI); here always a local path."""
    return Path(build_report(**kwargs))

pytestmark = pytest.mark.filterwarnings("ignore::rmd_ray.evaluation.evaluate.DuplicatePredictionsWarning")
CLASSES = ["cat", "dog", "fox"]
FAST = {"gallery_per_class": 1, "temperatures": [0.7]}  # fewer axes to draw


def _sections(page: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="(\w+)">(.*?)</section>', page, flags=re.S))


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_inputs")
    rng = np.random.default_rng(0)
    runs = {}
    for name, sharpness in (("CE", 3.0), ("proposed", 2.0)):
        # same seed -> same ids and labels: both runs saw the same samples
        runs[name] = write_predictions(
            root / f"{name}.parquet", *synthetic_run(120, 4, seed=1, sharpness=sharpness)
        )
    # 15 training images (5 per class) as an encoded-image Parquet source, and their scores
    img_ids = [f"img/{i:02d}" for i in range(15)]
    img_labels = np.repeat([0, 1, 2], 5)
    source = pa.table(
        {
            "id": img_ids,
            "label": img_labels,
            "image": [_png(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in img_ids],
        }
    ).replace_schema_metadata({b"classes": json.dumps(CLASSES).encode()})
    pq.write_table(source, root / "source.parquet")
    rmd = rng.normal(size=15) * 5
    scores = pa.table({"id": img_ids, "label": img_labels, "rmd": rmd})
    scores_path = write_parquet_atomic(
        scores, root / "scores.parquet", metadata={"classes": CLASSES, "c": 1e-3, "normalization": "minmax"}
    )
    corruption = {
        m: [{"corruption": "clean", "severity": 0, "acc": 0.9, "ece_mass": 0.02 + j, "ece_width": 0.03}]
        + [
            {
                "corruption": c,
                "severity": s,
                "acc": 0.9 - 0.1 * s,
                "ece_mass": 0.02 * s + j,
                "ece_width": 0.03 * s,
            }
            for c in ("gaussian_noise", "contrast", "pixelate")
            for s in range(1, 6)
        ]
        for j, m in enumerate(("CE", "proposed"))
    }
    vid, vlabels, vlogits = synthetic_run(60, 4, seed=3)
    proxy = difficulty_proxy_test(vid, rng.normal(size=60), vid, vlabels, vlogits, n_groups=5)
    return {
        "runs": runs,
        "scores_path": scores_path,
        "source": f"parquet:{root / 'source.parquet'}",
        "corruption": corruption,
        "proxy": proxy,
    }


@pytest.fixture(scope="module")
def full_report(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report_full")
    path = _report(
        runs=inputs["runs"],
        scores_path=inputs["scores_path"],
        source=inputs["source"],
        corruption_results=inputs["corruption"],
        proxy_results={"RMD (synthetic)": inputs["proxy"]},
        ood_results={"CE": {"digits": {"n_in": 10, "n_out": 5, **{
            s: {"auroc": 0.8, "aupr": 0.7, "aupr_error": 0.3, "fpr_at_95_tpr": 0.5}
            for s in ("maxlogit", "entropy", "msp")
        }}}},
        output_dir=out,
        title="Demo <report> & more",
        gallery_per_class=2,
    )
    return path, path.read_text(encoding="utf-8")


def test_every_section_has_its_heading_and_figure_when_all_inputs_are_given(full_report):
    path, page = full_report
    assert path.name == "report.html"
    sections = _sections(page)
    assert list(sections) == list(SECTIONS)  # all eight, in page order
    figures = {
        "metrics": 0,
        "reliability": 2,
        "rejection": 1,
        "corruption": 1,
        "proxy": 1,
        "ood": 0,
        "gallery": 1,
        "weights": 1,
    }
    for key, body in sections.items():
        assert f"<h2>{SECTIONS[key]}</h2>" in body
        assert body.count("<img ") == figures[key], key
        assert 'class="note"' not in body, key
    assert "<table>" in sections["metrics"]


def test_page_is_self_contained(full_report):
    _, page = full_report
    assert "<title>Demo &lt;report&gt; &amp; more</title>" in page
    for forbidden in ("http://", "https://", "<script", "<link", "url("):
        assert forbidden not in page
    sources = re.findall(r'<img alt="[^"]*" src="([^"]+)">', page)
    assert len(sources) == 7
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = Image.open(io.BytesIO(png)).size
        assert width > 200 and height > 150


def test_metrics_table_holds_each_runs_numbers_and_bolds_the_best(inputs, full_report):
    _, page = full_report
    table = _sections(page)["metrics"]
    accs = {}
    for name, p in inputs["runs"].items():
        m = evaluate_run(p)["metrics"]
        accs[name] = m["acc"]
        row = re.search(rf'<tr><td class="l">{name}</td><td>120</td>(.*?)</tr>', table).group(1)
        cells = re.findall(r"<td[^>]*>([^<]*)</td>", row)
        expected = [
            f"{100 * m['acc']:.2f}",
            f"{100 * m['ece_mass']:.2f}",
            f"{100 * m['ece_width']:.2f}",
            f"{m['nll']:.4f}",
            f"{m['brier']:.4f}",
            f"{100 * m['aurc']:.2f}",
            f"{100 * m['msp_auroc']:.2f}",
            f"{100 * m['msp_fpr_at_95_tpr']:.2f}",
        ]
        assert cells == expected
    best = max(accs, key=accs.get)
    assert re.search(rf'<tr><td class="l">{best}</td><td>120</td><td class="best">', table)


def test_runs_table_shows_the_loss_hyper_parameters_training_writes(tmp_path):
    ids, labels, logits = synthetic_run(40, 3, seed=0)
    runs = {
        "proposed": write_predictions(tmp_path / "p.parquet", ids, labels, logits, metadata={
            "model": "resnet18", "loss": "proposed", "loss_hparams": {"temperature": 0.7, "alpha": 0.3},
            "epochs": 6, "seed": 1}),
        "ce": write_predictions(tmp_path / "c.parquet", ids, labels, logits, metadata={
            "model": "resnet18", "loss": "ce", "loss_hparams": {}, "epochs": 6, "seed": 1}),
    }
    page = _report(runs=runs, output_dir=tmp_path / "r", **FAST).read_text(encoding="utf-8")
    table = _sections(page)["metrics"]
    row = re.search(r'<tr><td class="l">proposed</td>(.*?)</tr>', table.split("<th class=\"l\">hparams</th>")[1])
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", row.group(1))
    assert cells[:5] == ["resnet18", "proposed", "6", "1", "alpha=0.3, temperature=0.7"]
    row = re.search(r'<tr><td class="l">ce</td>(.*?)</tr>', table.split("<th class=\"l\">hparams</th>")[1])
    assert re.findall(r"<td[^>]*>([^<]*)</td>", row.group(1))[4] == ""
    assert format_hparams({"hparams": {"lr": 0.1}}) == "lr=0.1"  # other tools' key
    assert format_hparams({}) == ""


def test_report_is_written_atomically_and_readable(full_report):
    path, _ = full_report
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temporary file left
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_missing_inputs_give_notes_saying_what_enables_each_section(tmp_path):
    page = _report(runs={}, output_dir=tmp_path, title="empty").read_text()
    sections = _sections(page)
    assert list(sections) == list(SECTIONS)
    assert "<img" not in page
    for key, body in sections.items():
        assert 'class="note"' in body, key
    assert "pass runs={name: predictions.parquet}" in sections["metrics"]
    assert "pass corruption_results=corruption_eval(...)" in sections["corruption"]
    assert "pass proxy_results=difficulty_proxy_test(...)" in sections["proxy"]
    assert "rmd-ray evaluate --ood-source NAME=SOURCE" in sections["ood"]
    assert "pass scores_path=" in sections["gallery"] and "pass scores_path=" in sections["weights"]


def test_one_run_and_scores_without_source(inputs, tmp_path):
    page = _report(
        runs={"CE": inputs["runs"]["CE"]},
        scores_path=inputs["scores_path"],
        output_dir=tmp_path,
        temperatures=[0.5],
    ).read_text()
    s = _sections(page)
    assert s["reliability"].count("<img ") == 1
    assert s["rejection"].count("<img ") == 1 and "shaded when runs holds at least two runs" in s["rejection"]
    assert "<img" not in s["gallery"] and "pass source=" in s["gallery"]
    assert s["weights"].count("<img ") == 1 and "15 scored training samples" in s["weights"]
    assert "<img" not in s["corruption"] and "<img" not in s["proxy"]


def test_gallery_notes_scores_missing_from_the_source(inputs, tmp_path):
    scores = pq.read_table(inputs["scores_path"])
    extra = pa.table({"id": ["ghost/1", "ghost/2"], "label": [0, 1], "rmd": [100.0, -100.0]})
    path = write_parquet_atomic(
        pa.concat_tables([scores, extra]), tmp_path / "scores.parquet", metadata={"classes": CLASSES}
    )
    page = _report(
        runs={}, scores_path=path, source=inputs["source"], output_dir=tmp_path, **FAST
    ).read_text()
    gallery = _sections(page)["gallery"]
    assert "2 scored id(s) are missing from source" in gallery and gallery.count("<img ") == 1

    only_ghosts = write_parquet_atomic(extra, tmp_path / "ghosts.parquet")
    page = _report(
        runs={}, scores_path=only_ghosts, source=inputs["source"], output_dir=tmp_path, **FAST
    ).read_text()
    assert "None of the 2 scored ids occur in source" in _sections(page)["gallery"]


def test_gallery_selection_picks_extremes_per_class():
    ids = ["a", "b", "c", "d", "e", "f", "g", "h"]
    labels = [0, 0, 0, 0, 0, 1, 1, 2]
    rmd = [1.0, 5.0, -3.0, 5.0, 0.0, 2.0, -1.0, 7.0]
    picks = gallery_selection(ids, labels, rmd, per_class=2)
    assert list(picks) == [0, 1, 2]
    hard, easy = picks[0]
    assert hard.tolist() == [1, 3]  # rmd 5 (b) and 5 (d): tie broken by id
    assert easy.tolist() == [4, 2]  # rmd 0 then -3: the last is the easiest
    assert [p.tolist() for p in picks[1]] == [[5], [6]]  # 2 samples -> one per side
    assert [p.tolist() for p in picks[2]] == [[7], [7]]  # a class of one shows it on both sides


@pytest.mark.parametrize(
    ("values", "decimals", "shown"),
    [
        ([-12.3, 8.4, 0.5], 1, ["-12.3", "8.4", "0.5"]),  # spread 20.7: the default one decimal
        ([-4.0012, -4.0042, -4.0030], 4, ["-4.0012", "-4.0042", "-4.0030"]),  # spread 0.003
        ([2.0, 2.0], 1, ["2.0", "2.0"]),  # constant: nothing to separate
        ([1.0, 1.0 + 1e-12], 6, ["1.000000", "1.000000"]),  # capped at 6
        ([], 1, []),
    ],
)
def test_gallery_labels_get_enough_decimals_to_tell_images_apart(values, decimals, shown):
    assert _label_decimals(np.asarray(values)) == decimals
    assert [f"{v:.{decimals}f}" for v in values] == shown


def test_duplicates_in_runs_are_reported_in_the_table(tmp_path):
    ids, labels, logits = synthetic_run(20, 3, seed=9)
    path = write_predictions(
        tmp_path / "p.parquet", np.r_[ids, ids[:2]], np.r_[labels, labels[:2]], np.r_[logits, logits[:2]]
    )
    with pytest.warns(DuplicatePredictionsWarning):
        page = _report(runs={"padded": path}, output_dir=tmp_path / "out").read_text()
    assert "<th>duplicates dropped</th>" in page and re.search(
        r"<td>2</td><td class=\"l\">.*p\.parquet", page
    )


def test_validation_errors(inputs, tmp_path):
    runs = inputs["runs"]
    with pytest.raises(FileNotFoundError, match=r"predictions file for run 'x' not found"):
        _report(runs={"x": tmp_path / "nope.parquet"}, output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"runs must be a dict"):
        _report(runs=[runs["CE"]], output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"compare must name two different runs"):
        _report(runs=runs, compare=("CE", "other"), output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"compare must name two different runs"):
        _report(runs=runs, compare=("CE", "CE"), output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"temperatures must be a non-empty list of positive numbers"):
        _report(runs={}, temperatures=[0.7, 0], output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"corruption_results\['m'\] must be a non-empty list of dicts"):
        _report(runs={}, corruption_results={"m": [{"corruption": "fog"}]}, output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"corruption_results is empty"):
        _report(runs={}, corruption_results={}, output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"proxy_results\['error_rate'\] must be a ProxyResult"):
        _report(runs={}, proxy_results={"error_rate": [0.1]}, output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"proxy_results\['model'\] must be a ProxyResult"):
        _report(runs={}, proxy_results=[0.1, 0.2], output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"gallery_per_class must be a positive integer"):
        _report(runs={}, gallery_per_class=0, output_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"scores file not found"):
        _report(runs={}, scores_path=tmp_path / "none.parquet", output_dir=tmp_path)
    bad_scores = write_parquet_atomic(pa.table({"id": ["a"], "label": [0]}), tmp_path / "norm.parquet")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['rmd'\]"):
        _report(runs={}, scores_path=bad_scores, output_dir=tmp_path)
    nan_scores = write_parquet_atomic(
        pa.table({"id": ["a", "b"], "label": [0, 1], "rmd": [1.0, float("nan")]}), tmp_path / "nan.parquet"
    )
    with pytest.raises(ValueError, match=r"1 NaN/inf RMD value\(s\)"):
        _report(runs={}, scores_path=nan_scores, output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"unknown data source"):
        _report(runs={}, scores_path=inputs["scores_path"], source="webdataset:x", output_dir=tmp_path)
    with pytest.raises(TypeError, match=r"title must be a str"):
        _report(runs={}, title=None, output_dir=tmp_path)


def test_corruption_results_with_only_a_clean_row_still_plot(tmp_path):
    clean_only = [{"corruption": "clean", "severity": 0, "acc": 0.9, "ece_mass": 0.02, "ece_width": 0.03}]
    page = _report(runs={}, corruption_results=clean_only, output_dir=tmp_path).read_text()
    assert _sections(page)["corruption"].count("<img ") == 1
    assert "types per method: model: 0" in page


def test_an_undecodable_source_image_becomes_a_grey_tile_with_a_note(tmp_path):
    ids = ["x0", "x1", "x2", "x3"]
    good = _png(np.zeros((8, 8, 3), np.uint8))
    source = pa.table({"id": ids, "label": [0, 0, 1, 1], "image": [good, b"not an image", good, good]})
    pq.write_table(source, tmp_path / "src.parquet")
    scores = write_parquet_atomic(
        pa.table({"id": ids, "label": [0, 0, 1, 1], "rmd": [3.0, 2.0, 1.0, 0.0]}), tmp_path / "scores.parquet"
    )
    page = _report(
        runs={}, scores_path=scores, source=f"parquet:{tmp_path / 'src.parquet'}", output_dir=tmp_path, **FAST
    ).read_text()
    gallery = _sections(page)["gallery"]
    assert "1 selected image(s) could not be decoded" in gallery and gallery.count("<img ") == 1


def test_ood_section_shows_each_run_and_set_and_bolds_the_best_auroc(tmp_path):
    def report(auroc: float) -> dict:
        return {"n_in": 100, "n_out": 50, **{s: {"auroc": auroc, "aupr": 0.5, "aupr_error": 0.4, "fpr_at_95_tpr": 0.25}
                                            for s in ("maxlogit", "entropy", "msp")}}

    ood = {"proposed": {"digits": report(0.9123)}, "ce": {"digits": report(0.8765)}}
    page = _report(runs={}, ood_results=ood, output_dir=tmp_path).read_text(encoding="utf-8")
    assert "Out-of-distribution detection" in page
    assert page.count('<td class="best">0.9123</td>') == 3 and page.count("<td class=\"\">0.8765</td>") == 3
    assert "25.0%" in page and "OOD results: 2" in page
    with pytest.raises(ValueError, match=r"ood_results\['m'\] must be a dict \{OOD set: report\}"):
        _report(runs={}, ood_results={"m": {"digits": {"auroc": 1}}}, output_dir=tmp_path)


def test_runs_may_be_prediction_parts_directories_as_training_writes(tmp_path):
    """Training writes predictions_<split>.parquet/ as parts + a manifest (rows it could not predict flagged)."""
    import shutil

    from rmd_ray.io.parts import write_manifest

    ids, labels, logits = synthetic_run(40, 3, seed=2)
    single = write_predictions(tmp_path / "single.parquet", ids, labels, logits, metadata={"loss": "ce"})
    folder = tmp_path / "predictions_test.parquet"
    folder.mkdir()
    shutil.copy(single, folder / "part-0.parquet")
    write_manifest(str(folder), ["part-0.parquet"], rows=40, metadata={"loss": "ce", "split": "test"})
    page = _report(runs={"dir": folder, "file": single}, output_dir=tmp_path / "r", **FAST).read_text()
    table = _sections(page)["metrics"]
    cells = {run: re.search(rf'<tr><td class="l">{run}</td><td>(\d+)</td>', table).group(1) for run in ("dir", "file")}
    assert cells == {"dir": "40", "file": "40"}

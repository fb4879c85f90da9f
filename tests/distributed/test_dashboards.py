"""TensorBoard logs and progress lines of Ray Train runs; Ray's own output routed to a log file."""

from __future__ import annotations

import logging
import math
import pickle

import pytest

from rmd_ray.distributed.runtime import progress as console
from rmd_ray.distributed.runtime.dashboards import TrainProgressCallback, read_scalars, scalar_metrics

EPOCHS = [
    {"epoch": 1, "train_loss": 2.0, "train_acc": 0.25, "lr": 0.1, "resumed_from": 0, "time_s": 2.0,
     "val_acc": float("nan")},  # not evaluated this epoch: the ranking placeholder
    {"epoch": 2, "train_loss": 1.5, "train_acc": 0.5, "lr": 0.05, "resumed_from": 0, "time_s": 2.0,
     "val_acc": 0.625, "val_ece_mass": 0.0625, "val_nll": 1.25},
    {"epoch": 3, "train_loss": 1.25, "train_acc": 0.75, "lr": 0.0, "resumed_from": 0, "time_s": 2.0,
     "val_acc": 0.75, "val_ece_mass": 0.03125, "val_nll": 1.0},
]


def test_scalar_metrics_are_tagged_by_split_and_skip_bookkeeping_and_nan():
    assert scalar_metrics(EPOCHS[0]) == {"train/loss": 2.0, "train/acc": 0.25, "lr": 0.1}
    assert scalar_metrics({"val_msp_auroc": 0.5, "flag": True, "name": "x", "epoch": 3}) == {"val/msp_auroc": 0.5}


def test_callback_writes_every_epoch_to_tensorboard_and_prints_one_line_each(tmp_path, capsys):
    board = TrainProgressCallback("train p", epochs=4, rows_per_epoch=100, tensorboard_dir=tmp_path / "tb")
    board = pickle.loads(pickle.dumps(board))  # as Ray Train ships it to the controller
    worker_1 = {"epoch": 0, "train_loss": 9.0}  # other ranks' reports are not logged
    for report in EPOCHS:
        board.after_report(None, [report, worker_1], checkpoint=None)
    board._close()
    scalars = read_scalars(tmp_path / "tb")
    assert scalars["train/loss"] == [(1, 2.0), (2, 1.5), (3, 1.25)]
    assert scalars["train/acc"] == [(1, 0.25), (2, 0.5), (3, 0.75)]
    assert scalars["val/acc"] == [(2, 0.625), (3, 0.75)]  # NaN (not evaluated) is no point
    assert scalars["val/ece_mass"] == [(2, 0.0625), (3, 0.03125)]
    assert set(scalars) == {"train/loss", "train/acc", "lr", "val/acc", "val/ece_mass", "val/nll"}
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(line.startswith(console.PROGRESS_PREFIX + "[train p] epoch ") for line in lines)
    assert lines[0].startswith(console.PROGRESS_PREFIX + "[train p] epoch 1/4, 100 rows, ")
    assert lines[2].startswith(console.PROGRESS_PREFIX + "[train p] epoch 3/4, 300 rows, ")
    assert lines[2].endswith("loss 1.25, val acc 0.75, val ECE 0.03125")
    assert "val acc" not in lines[0]


def test_progress_line_rate_and_eta():
    board = TrainProgressCallback("t", epochs=5, rows_per_epoch=200, tensorboard_dir=None)
    board._first_epoch = 0
    # 2 epochs (400 rows) in 8 s: 50 rows/s; 3 epochs (600 rows) left: 12 s
    assert board.line(2, 8.0, {"train/loss": 0.5}) == "[t] epoch 2/5, 400 rows, 50 rows/s, ETA 12 s, loss 0.5"
    board._first_epoch = 1  # resumed after epoch 1: the rate counts only epochs run here
    assert board.line(3, 4.0, {}) == "[t] epoch 3/5, 400 rows, 100 rows/s, ETA 4 s"
    assert math.isnan(float(board.line(1, 0.0, {}).split("ETA ")[1].split()[0]))


@pytest.fixture
def routed(tmp_path):
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate)
             for name in console._RAY_LOGGERS}
    path = console.route_ray_logs(tmp_path / "logs" / "ray.log")
    yield path
    console.unroute()
    for name, (handlers, propagate) in saved.items():
        logging.getLogger(name).handlers[:] = handlers
        logging.getLogger(name).propagate = propagate


def test_worker_output_goes_to_the_log_file_except_progress_lines(routed, capsys):
    import ray.data
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    assert ray.data.DataContext.get_current().enable_progress_bars is False
    assert console.route_worker_output() is True
    try:
        dispatcher.emit({"ip": "10.0.0.1", "pid": 42, "actor_name": "PlacementGroupCleaner", "is_err": False,
                         "localhost": "10.0.0.1", "job": "", "lines": [
                             "Failed to query Ray Train Controller actor state.",
                             console.PROGRESS_PREFIX + "[train ce] epoch 1/2, 10 rows, 5 rows/s, ETA 2 s"]})
        logging.getLogger("ray.data").warning("Starting execution of Dataset")
    finally:
        dispatcher.remove_handler("rmd_ray_logs")
    assert capsys.readouterr().out == "[train ce] epoch 1/2, 10 rows, 5 rows/s, ETA 2 s\n"
    text = routed.read_text()
    assert "Failed to query Ray Train Controller actor state." in text and "PlacementGroupCleaner" in text
    assert "Starting execution of Dataset" in text

"""TensorBoard logs and a progress line per epoch for Ray Train runs.

rmd-ray is used through TensorBoard / Tune dashboards, so a plain ``rmd-ray train`` writes the same
scalars a Tune trial does (Tune's ``TBXLoggerCallback`` covers ``rmd-ray tune``). The callback runs on
the Ray Train controller, which sees every epoch's report, so the training loop
(:mod:`rmd_ray.distributed.training`) needs no change and knows nothing of TensorBoard.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import ray.train

from rmd_ray.distributed.runtime.progress import progress

#: Reported metrics that are bookkeeping, not curves.
_NOT_SCALARS = {"epoch", "resumed_from", "time_s"}


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numeric entries of one epoch's report, as TensorBoard tags (``val_acc`` -> ``val/acc``).

    NaN means "not evaluated this epoch" (``training._SCORE_METRIC`` placeholder) and is left out,
    so a curve has a point only where a value was measured.
    """
    out = {}
    for key, value in metrics.items():
        if key in _NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            continue
        split, sep, name = key.partition("_")
        out[f"{split}/{name}" if sep and split in ("train", "val", "test") else key] = float(value)
    return out


class TrainProgressCallback(ray.train.UserCallback):
    """Per epoch: scalars to TensorBoard (optional) and one progress line (rows, rate, ETA, loss, acc, ECE).

    Parameters
    ----------
    label : str
        Names the run in the progress line, e.g. ``"train proposed"``.
    epochs : int
        Epochs of the run (for the ETA).
    rows_per_epoch : int
        Training rows per epoch (for the rate).
    tensorboard_dir : path, optional
        Where to write TensorBoard event files (a local folder on the node of the Ray Train
        controller: the driver's node for a local instance). None: no TensorBoard.
    """

    def __init__(self, label: str, *, epochs: int, rows_per_epoch: int, tensorboard_dir: str | os.PathLike | None):
        self.label = label
        self.epochs = int(epochs)
        self.rows_per_epoch = int(rows_per_epoch)
        self.tensorboard_dir = None if tensorboard_dir is None else str(tensorboard_dir)
        self._writer = None
        self._start: float | None = None
        self._first_epoch: int | None = None

    def __getstate__(self) -> dict[str, Any]:  # sent to the controller actor: no open writer
        return {**self.__dict__, "_writer": None}

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        """Rank 0's metrics (the only rank that evaluates) become one TensorBoard step and one line."""
        if not metrics:
            return
        report = metrics[0]
        epoch = int(report.get("epoch", 0))
        now = time.perf_counter()
        if self._start is None:  # the first report: the rate is measured from its start
            self._start = now - float(report.get("time_s", 0.0))
            self._first_epoch = epoch - 1
        scalars = scalar_metrics(report)
        if self.tensorboard_dir is not None:
            if self._writer is None:
                from tensorboardX import SummaryWriter

                Path(self.tensorboard_dir).mkdir(parents=True, exist_ok=True)
                self._writer = SummaryWriter(self.tensorboard_dir)
            for tag, value in scalars.items():
                self._writer.add_scalar(tag, value, global_step=epoch)
            self._writer.flush()
        progress(self.line(epoch, now - self._start, scalars))

    def line(self, epoch: int, elapsed: float, scalars: dict[str, float]) -> str:
        """``[train proposed] epoch 2/6, 1024 rows, 85 rows/s, ETA 48 s, loss 1.234, acc 0.612, ECE 0.041``."""
        done_epochs = epoch - (self._first_epoch or 0)
        rows = done_epochs * self.rows_per_epoch
        rate = rows / elapsed if elapsed > 0 else 0.0
        eta = (self.epochs - epoch) * self.rows_per_epoch / rate if rate > 0 else float("nan")
        parts = [f"[{self.label}] epoch {epoch}/{self.epochs}", f"{rows} rows", f"{rate:.0f} rows/s"]
        parts.append(f"ETA {eta:.0f} s")
        for tag, name in (("train/loss", "loss"), ("val/acc", "val acc"), ("val/ece_mass", "val ECE")):
            if tag in scalars:
                parts.append(f"{name} {scalars[tag]:.4g}")
        return ", ".join(parts)

    def after_exception(self, run_context, worker_exceptions) -> None:
        self._close()

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __del__(self) -> None:
        self._close()


def read_scalars(logdir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the TensorBoard event files under ``logdir``: ``{tag: [(step, value), ...]}``.

    Reads the TFRecord framing (length, CRC, ``Event`` proto, CRC) with tensorboardX's own protos, so
    no TensorFlow or TensorBoard install is needed to check what a run logged. Points are sorted by
    step; CRCs are not checked.
    """
    import struct

    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(logdir).rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack_from("<Q", data, pos)
            record = data[pos + 12 : pos + 12 + length]
            pos += 12 + length + 4
            if len(record) < length:  # a record still being written
                break
            event = Event.FromString(record)
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, []).append((int(event.step), float(value.simple_value)))
    return {tag: sorted(points) for tag, points in out.items()}

"""Decode image rows to RGB PIL images, batch them through an encoder's preprocessing, augment views.

A row is a mapping with ``id`` (str), ``label`` (int) and exactly one image source:

- ``image``: encoded bytes (JPEG, PNG, ...; the format is sniffed from the content by PIL, so a PNG
  stored under a ``.JPEG`` name decodes fine),
- ``path``: a file path or object-store URI (read, then decoded like ``image``),
- ``pixels`` + ``shape``: raw uint8 bytes, row-major, ``shape`` ``[H, W]`` or ``[H, W, C]`` with
  ``C`` in 1, 3, 4.

Keys whose value is ``None`` count as absent, so rows from ``pyarrow.Table.to_pylist`` work.

:func:`decode_image` raises :class:`DecodeError` (a ValueError) with a human reason for a bad image;
:func:`decode_batch` never raises for one: it returns the bad rows as ``(id, label, reason)`` so no
row is lost. Truncated files are errors: PIL's ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay False
(with it True PIL pads a truncated image with grey and says nothing).

Known limit: libjpeg recovers silently from some corruption inside the entropy-coded data (a JPEG
with damaged bytes in the middle decodes to a visibly damaged image without an error); nothing short
of a reference checksum can catch that.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from rmd_ray.io import storage

if TYPE_CHECKING:  # torch is imported where tensors are made: a decode task that yields uint8 never loads it
    import torch

__all__ = ["DecodeError", "IMAGE_KEYS", "augment", "decode_batch", "decode_image", "view_seed"]

IMAGE_KEYS = ("image", "path", "pixels")
_PIXEL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


class DecodeError(ValueError):
    """An image that cannot be decoded; ``str(err)`` is the reason recorded for the row."""


# --------------------------------------------------------------------------------------------
# one image


def decode_image(row: Mapping[str, Any], *, min_side: int | None = None) -> Image.Image:
    """Decode one row to an RGB ``PIL.Image``.

    Parameters
    ----------
    row : mapping
        ``id``, ``label`` and exactly one of ``image`` / ``path`` / ``pixels`` (+ ``shape``).
    min_side : int, optional
        Reduced-size decoding: a JPEG whose shorter side is at least twice ``min_side`` is decoded at
        1/2, 1/4 or 1/8 of its size by libjpeg's DCT scaling (PIL's ``draft``), the smallest of those
        whose shorter side is still ``>= min_side``. For a resize that brings the shorter side to
        ``min_side`` (or less) nothing it keeps is lost, and most of the decode and resize work is
        skipped. ``None`` (default): full size. Other formats always decode at full size.

    Returns
    -------
    PIL.Image.Image
        Mode ``"RGB"``, fully loaded. Grayscale, CMYK, palette, alpha and 16-bit images are
        converted (alpha is dropped, as torchvision's ``pil_loader`` does; 16-bit values are
        scaled by 1/257).

    Raises
    ------
    DecodeError
        No or several image sources, corrupt / unidentifiable / truncated / empty data, missing
        file, pixel bytes that do not match ``shape``, an unsupported colour mode.
    RuntimeError
        If ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` has been switched on by other code: truncated
        images would then decode silently, so this refuses to run rather than hide them.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by other code): truncated images would "
            "decode as grey without an error; set it back to False"
        )
    if min_side is not None and (isinstance(min_side, bool) or not isinstance(min_side, (int, np.integer))
                                 or min_side < 1):
        raise ValueError(f"min_side must be None or an int >= 1, got {min_side!r}")
    present = [k for k in IMAGE_KEYS if row.get(k) is not None]
    if len(present) != 1:
        what = "none" if not present else ", ".join(present)
        raise DecodeError(f"row must have exactly one of image / path / pixels, found {what}")
    key = present[0]
    if key == "pixels":
        img = _from_pixels(row["pixels"], row.get("shape"))
    elif key == "path":
        path = str(row["path"])
        try:
            data = storage.read_bytes(path)  # a local path or an object-store URI alike
        except FileNotFoundError:
            raise DecodeError(f"file not found: {path}") from None
        except (OSError, ValueError) as err:  # ValueError: not a location storage understands
            raise DecodeError(f"cannot read file {path}: {getattr(err, 'strerror', None) or err}") from None
        img = _from_bytes(data, where=f" ({path})", min_side=min_side)
    else:
        img = _from_bytes(_as_bytes(row["image"]), where="", min_side=min_side)
    return _to_rgb(img)


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, np.ndarray) and value.dtype == np.uint8:
        return value.tobytes()
    raise DecodeError(f"image must be encoded bytes, got {type(value).__name__}")


def _from_bytes(data: bytes, *, where: str, min_side: int | None = None) -> Image.Image:
    if len(data) == 0:
        raise DecodeError(f"empty image data (0 bytes){where}")
    try:
        img = Image.open(io.BytesIO(data))
        if min_side and img.format == "JPEG" and min(img.size) >= 2 * min_side:
            # draft picks the largest scale 1/s (s in 8, 4, 2) with both sides // s >= the size asked
            img.draft(img.mode, (int(min_side), int(min_side)))
        img.load()  # PIL is lazy: truncation and most corruption only show up here
    except UnidentifiedImageError:
        raise DecodeError(
            f"not a recognised image: PIL cannot identify the {len(data)} bytes (corrupt or unsupported "
            f"format){where}"
        ) from None
    except Image.DecompressionBombError as err:
        raise DecodeError(f"image too large (decompression-bomb guard): {err}{where}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        msg = str(err)
        if "truncated" in msg.lower():
            raise DecodeError(f"truncated image file: {msg}{where}") from None
        raise DecodeError(f"corrupt image data: {msg}{where}") from None
    if img.width < 1 or img.height < 1:
        raise DecodeError(f"empty image ({img.width}x{img.height}){where}")
    return img


def _from_pixels(pixels: Any, shape: Any) -> Image.Image:
    if shape is None:
        raise DecodeError("pixels given without shape ([H, W] or [H, W, C])")
    try:
        shape = [int(v) for v in shape]
    except (TypeError, ValueError):
        raise DecodeError(f"shape must be a list of ints, got {shape!r}") from None
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in _PIXEL_MODES):
        raise DecodeError(f"shape must be [H, W] or [H, W, C] with C in 1, 3, 4; got {shape}")
    if min(shape[:2]) < 1:
        raise DecodeError(f"empty image (shape {shape})")
    if isinstance(pixels, np.ndarray):
        if pixels.dtype != np.uint8:
            raise DecodeError(f"pixels must be uint8, got {pixels.dtype}")
        buf = pixels.tobytes()
    elif isinstance(pixels, (bytes, bytearray, memoryview)):
        buf = bytes(pixels)
    else:
        raise DecodeError(f"pixels must be raw uint8 bytes, got {type(pixels).__name__}")
    need = math.prod(shape)
    if len(buf) != need:
        raise DecodeError(f"pixels has {len(buf)} bytes but shape {shape} needs {need}")
    arr = np.frombuffer(buf, dtype=np.uint8).reshape(shape)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return Image.fromarray(arr, mode=_PIXEL_MODES[1 if arr.ndim == 2 else arr.shape[2]])


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    try:
        if mode == "RGB":
            return img
        if mode in ("P", "PA"):
            # via RGBA: PIL warns when a palette image with transparency goes straight to RGB
            return img.convert("RGBA").convert("RGB")
        if mode.startswith("I;16") or mode == "I":
            # 16-bit grayscale (PNG/TIFF): PIL's own convert would clip everything above 255 to white
            arr = np.asarray(img, dtype=np.float64) / 257.0
            arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
            return Image.fromarray(arr, mode="L").convert("RGB")
        if mode == "F":
            return img.convert("L").convert("RGB")
        return img.convert("RGB")  # L, LA, 1, RGBA, CMYK (PIL honours the Adobe inversion), YCbCr, ...
    except ValueError as err:
        raise DecodeError(f"unsupported colour mode {mode}: {err}") from None


# --------------------------------------------------------------------------------------------
# augmentation


def view_seed(image_id: str, view: int, *, seed: int = 0) -> int:
    """Deterministic 63-bit seed for augmented view ``view`` of image ``image_id``.

    A keyed hash (BLAKE2b), not Python's ``hash``: the same on every process and machine, so a
    view is reproducible whatever shard or worker decodes it.
    """
    digest = hashlib.blake2b(f"{int(seed)}\x00{image_id}\x00{int(view)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def augment(
    image: Image.Image,
    *,
    seed: int,
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    flip: bool = True,
) -> Image.Image:
    """Random resized crop + horizontal flip, deterministic in ``seed``; same output size as input.

    The crop box follows torchvision's ``RandomResizedCrop.get_params`` (area fraction uniform in
    ``scale``, log-uniform aspect ratio in ``ratio``, 10 tries, then a centre crop) but draws from
    ``numpy.random.default_rng(seed)``: torchvision's draws from the global torch RNG, which would
    make a view depend on what else ran in the process. The crop is resized back to the input size
    (bilinear) so the encoder's own preprocessing then runs unchanged. Flip with probability 1/2.

    Parameters
    ----------
    image : PIL.Image.Image
    seed : int
        E.g. :func:`view_seed` ``(id, view)``.
    scale : (float, float)
        Area fraction range, ``0 < lo <= hi <= 1``.
    ratio : (float, float)
        Aspect ratio (w / h) range, ``0 < lo <= hi``.
    flip : bool

    Returns
    -------
    PIL.Image.Image
        Same size and mode as ``image``.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL.Image, got {type(image).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    lo, hi = (float(v) for v in scale)
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {scale}")
    rlo, rhi = (float(v) for v in ratio)
    if not 0.0 < rlo <= rhi:
        raise ValueError(f"ratio must satisfy 0 < lo <= hi, got {ratio}")

    rng = np.random.default_rng(int(seed))
    width, height = image.size
    top, left, h, w = _crop_box(rng, width, height, (lo, hi), (rlo, rhi))
    out = image.crop((left, top, left + w, top + h)).resize((width, height), Image.BILINEAR)
    if flip and rng.random() < 0.5:
        out = ImageOps.mirror(out)
    return out


def _crop_box(rng, width, height, scale, ratio):
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    # fallback, as torchvision: the whole image clamped to the ratio range, centred
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    w, h = max(1, w), max(1, h)
    return (height - h) // 2, (width - w) // 2, h, w


# --------------------------------------------------------------------------------------------
# batches


def decode_batch(
    rows: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
    *,
    preprocess: Callable[[Image.Image], torch.Tensor],
    view: int | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, list[str], list[tuple[str, int, str]]]:
    """Decode, optionally augment, and preprocess a batch; bad images become error records.

    Parameters
    ----------
    rows : sequence of row mappings, a ``pyarrow.Table``, or a mapping of columns
        (the dict-of-arrays batch format of Ray Data's ``map_batches``).
    preprocess : callable
        ``PIL.Image`` (RGB) -> float tensor ``(C, H, W)``, e.g. ``Encoder.preprocess``.
    view : int, optional
        ``None``: no augmentation. Otherwise each image is passed through
        ``augment(image, seed=view_seed(id, view, seed=seed))`` before ``preprocess``; averaging
        features over ``view = 0 .. n_views - 1`` gives the multi-view features.
    seed : int
        Base seed mixed into every view seed.

    Returns
    -------
    images : torch.Tensor, shape (B_ok, C, H, W)
        Stacked preprocessed images of the rows that decoded (``B_ok`` may be 0; the shape of an
        empty batch comes from preprocessing a 1x1 black image).
    ok_ids : list of str, length B_ok
        Their ids, in input order.
    errors : list of (id, label, reason)
        One per row that failed to decode (see :class:`DecodeError`).

    Raises
    ------
    ValueError
        A row without ``id`` or ``label``, or ``preprocess`` returning tensors of different shapes
        (a bug in the caller, not a bad image).
    """
    if not callable(preprocess):
        raise TypeError("preprocess must be a callable PIL.Image -> tensor")
    if view is not None and (isinstance(view, bool) or not isinstance(view, (int, np.integer)) or view < 0):
        raise ValueError(f"view must be None or a non-negative int, got {view!r}")
    row_list = _rows(rows)
    import torch

    tensors: list[torch.Tensor] = []
    ok_ids: list[str] = []
    errors: list[tuple[str, int, str]] = []
    for i, row in enumerate(row_list):
        if "id" not in row or "label" not in row:
            raise ValueError(f"row {i} lacks 'id' or 'label' (keys: {sorted(row)})")
        image_id, label = str(row["id"]), row["label"]
        label = None if label is None else int(label)
        try:
            img = decode_image(row)
        except DecodeError as err:
            errors.append((image_id, label, str(err)))
            continue
        if view is not None:
            img = augment(img, seed=view_seed(image_id, int(view), seed=seed))
        x = preprocess(img)
        if tensors and x.shape != tensors[0].shape:
            raise ValueError(
                f"preprocess gave shape {tuple(x.shape)} for id {image_id!r} but {tuple(tensors[0].shape)} "
                f"for id {ok_ids[0]!r}; it must produce one fixed size"
            )
        tensors.append(x)
        ok_ids.append(image_id)
    if tensors:
        batch = torch.stack(tensors)
    else:
        batch = preprocess(Image.new("RGB", (1, 1))).unsqueeze(0)[:0]
    return batch, ok_ids, errors


def _rows(rows: Any) -> list[Mapping[str, Any]]:
    try:
        import pyarrow as pa

        if isinstance(rows, pa.Table):
            return rows.to_pylist()
    except ImportError:  # pragma: no cover - pyarrow is a dependency of the data layer
        pass
    if isinstance(rows, Mapping):
        columns = {k: list(v) for k, v in rows.items()}
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(
                f"column batch has columns of different lengths: { {k: len(v) for k, v in columns.items()} }"
            )
        n = lengths.pop() if lengths else 0
        return [{k: v[i] for k, v in columns.items()} for i in range(n)]
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
        raise TypeError(
            "rows must be a sequence of mappings, a pyarrow.Table or a column mapping, "
            f"got {type(rows).__name__}"
        )
    return list(rows)

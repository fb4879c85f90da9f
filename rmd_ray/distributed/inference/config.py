"""What the batch-inference pipeline is told: the frozen model (``EncoderSpec``), how to run it
(``ExtractConfig``), what one embedding pass returns (``EmbedResult``), and the actor pool's size."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ray

from rmd_ray.distributed.runtime.cluster import physical_cpus
from rmd_ray.nn.encoders import DEFAULT_ENCODER, Encoder, Preprocessing, build_encoder, encoder_preprocessing

__all__ = ["EmbedResult", "EncoderSpec", "ExtractConfig", "actor_resources"]


@dataclass(frozen=True)
class EncoderSpec:
    """What every actor needs to rebuild the same frozen encoder (the model itself never travels)."""

    name: str = DEFAULT_ENCODER
    checkpoint: str | None = None
    image_size: int | None = None
    pretrained: bool = True

    def build(self) -> Encoder:
        return build_encoder(
            self.name, checkpoint=self.checkpoint, image_size=self.image_size, pretrained=self.pretrained
        )

    def preprocessing(self) -> Preprocessing:
        """The encoder's preprocessing from its registry entry: what decode tasks need, no model built."""
        return encoder_preprocessing(self.name, image_size=self.image_size)


@dataclass(frozen=True)
class ExtractConfig:
    """How feature extraction is spread over the cluster.

    Parameters
    ----------
    batch_size : int
        Images per encoder call.
    num_actors : int, optional
        Encoder actors; default one per GPU when the cluster has GPUs, else three quarters of the
        CPUs (at least one core is left to decoding).
    gpus_per_actor : float, optional
        Default 1 when the cluster has GPUs, else 0.
    n_views : int
        1: each image once, unaugmented. V > 1: V augmented views per image (random resized crop +
        flip, seeded by (id, view)); the Gaussians are fitted on all views and scores averaged.
    seed : int
        Base seed of the view augmentations.
    write_rows : int
        Rows per features part file.
    decode_cpus : float
        Logical CPUs each decode task asks for.
    draft_decode : bool
        Reduced-size decoding (docs/design.md section 7.7): a JPEG at least twice the size the resize
        needs is decoded at 1/2, 1/4 or 1/8 size by libjpeg's DCT scaling, never below what the
        resize keeps (:func:`rmd_ray.data.decode.decode_image`'s ``min_side``). Only with
        ``n_views == 1`` (an augmented view crops before it resizes, so it may need the full size).
    stall_seconds : float
        An execution that writes no features for this long (a block lost with a node, say) is
        stopped and resumed from the completion records.
    startup_seconds : float
        How long an execution may take to write its first features (its actors load the encoder)
        before it counts as stalled; ``stall_seconds`` if that is longer.
    """

    batch_size: int = 64
    num_actors: int | None = None
    gpus_per_actor: float | None = None
    n_views: int = 1
    seed: int = 0
    write_rows: int = 4096
    decode_cpus: float = 1.0
    draft_decode: bool = True
    stall_seconds: float = 600.0
    startup_seconds: float = 600.0

    def __post_init__(self) -> None:
        for name in ("batch_size", "n_views", "write_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.num_actors is not None and (not isinstance(self.num_actors, int) or self.num_actors < 1):
            raise ValueError(f"num_actors must be an int >= 1 or None, got {self.num_actors!r}")
        if self.gpus_per_actor is not None and not (0 <= self.gpus_per_actor):
            raise ValueError(f"gpus_per_actor must be >= 0, got {self.gpus_per_actor!r}")
        if not isinstance(self.draft_decode, bool):
            raise TypeError(f"draft_decode must be True or False, got {self.draft_decode!r}")
        if not 0 < self.decode_cpus <= 64:
            raise ValueError(f"decode_cpus must be in (0, 64], got {self.decode_cpus!r}")
        for name in ("stall_seconds", "startup_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class EmbedResult:
    """What pass 1 left in ``features_dir`` and how it got there."""

    features_dir: str
    attempt: str
    shards_done_before: int
    shards_embedded: int
    rows: int
    dataset_fingerprint: str
    nodes: tuple[str, ...]
    seconds: float
    metadata: dict[str, Any] = field(default_factory=dict)
    shards_changed: int = 0



def actor_resources(extract: ExtractConfig) -> tuple[int, float]:
    """(actors, GPUs per actor): as configured, else one per GPU, else the cores decoding leaves."""
    resources = ray.cluster_resources()
    gpus = extract.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if resources.get("GPU", 0) > 0 else 0.0
    if extract.num_actors:
        return extract.num_actors, gpus
    if gpus:
        return max(1, int(resources["GPU"] // gpus)), gpus
    cpus = int(resources.get("CPU", 1))
    nodes = max(1, sum(1 for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0))
    if nodes == 1:
        # Leave a quarter of the cores (at least one) to decoding: on 2 cores one encoder actor and the
        # decode tasks beat two actors (docs/benchmarks.md, extract_throughput).
        cores = physical_cpus()
        return max(1, min(cores - max(1, cores // 4), cpus - 1)), 0.0
    return max(1, cpus - cpus // 4 - nodes), 0.0

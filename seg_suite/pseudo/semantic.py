"""Stuff / semantic pseudo-labels: dataset-level k-means on patch features, one cluster map per image.

Two passes over the images, each a job of the one runner (sharded, journaled, resumable):

1. :class:`PatchSampleJob`: every image's last-layer patch tokens (image resized so its longer
   side is ``input_size``, 320 as STEGO's ``eval_config.yml`` ``res``), L2-normalised; a seeded
   random subset of ``samples_per_image`` patches per image is kept (``<stem>.parts/`` ->
   ``<stem>.npy``), so fitting reads a bounded sample of the dataset rather than every patch.
   :class:`~seg_suite.pseudo.kmeans.MaskClusterer` fits S centroids on it (default S=27, the
   COCO-Stuff-27 setting of STEGO and U2Seg).
2. :class:`StuffAssignJob`: every image's patches are scored against the L2-normalised centroids
   (cosine similarity times 2, STEGO's ``cluster_probe(code, 2, log_probs=True)``), the scores are
   bilinearly upsampled to the image, optionally refined by a dense CRF with STEGO's parameters
   (``src/crf.py``), and the argmax is written as an 8-bit PNG (0..S-1) named like the image.

Assignment is by cosine similarity (STEGO's cluster lookup normalises both sides); the centroids
are saved so new images get the same clusters (``--centroids``). Never imports detectron2.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from seg_suite.errors import UserError
from seg_suite.features.precision import DEFAULT_PRECISION
from seg_suite.io.files import atomic_write_npy, atomic_write_png, file_sha256, png_name
from seg_suite.io.images import DEFAULT_MAX_PIXELS, load_image
from seg_suite.io.paths import PathEscapeError, output_path_under
from seg_suite.pseudo.feature_job import BackboneJob, parts_dir, resize_to_grid, save_part, write_feature_parts
from seg_suite.pseudo.inputs import WorkItem
from seg_suite.pseudo.jobs import ItemError

DEFAULT_NUM_STUFF = 27  # STEGO / U2Seg: COCO-Stuff-27
DEFAULT_INPUT_SIZE = 320  # STEGO src/configs/eval_config.yml "res: 320"
DEFAULT_SAMPLES_PER_IMAGE = 100  # our choice: 118k COCO images -> 11.8M rows, ~36 GB at D=768 on disk
LOGIT_SCALE = 2.0  # STEGO eval_segmentation.py: cluster_probe(code, 2, log_probs=True)
# STEGO src/crf.py
CRF_MAX_ITER = 10
CRF_POS_W = 3
CRF_POS_XY_STD = 1
CRF_BI_W = 4
CRF_BI_XY_STD = 67
CRF_BI_RGB_STD = 3
FACET = "token"


def _item_seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little")


class _GridJob(BackboneJob):
    """Read an image and compute its normalised patch-token grid [h, w, C] (CPU tensor)."""

    def __init__(self, backbone: str, input_size: int = DEFAULT_INPUT_SIZE, **kwargs):
        super().__init__(backbone, **kwargs)
        self.input_size = int(input_size)
        if self.input_size < self.patch_size:
            raise UserError(f"--input-size {self.input_size} is smaller than one {self.patch_size}-pixel patch")

    def prepare(self, item: WorkItem):
        return item.key, load_image(item.path, max_pixels=self.max_pixels)

    def grid(self, image: np.ndarray):
        import torch.nn.functional as F

        x = resize_to_grid(image, self.input_size, self.patch_size)
        return F.normalize(self.features(x, FACET)[0].float(), dim=-1).cpu()


class PatchSampleJob(_GridJob):
    """Pass 1: a seeded sample of each image's L2-normalised patch features (see the module docstring)."""

    name = "stuff-samples"

    def __init__(self, output, backbone: str, samples_per_image: int = DEFAULT_SAMPLES_PER_IMAGE, seed: int = 0,
                 input_size: int = DEFAULT_INPUT_SIZE, weights=None, device: str = "cpu", random_init: bool = False,
                 max_pixels: int = DEFAULT_MAX_PIXELS, precision: str = DEFAULT_PRECISION):
        super().__init__(backbone, input_size, weights=weights, device=device, random_init=random_init,
                         max_pixels=max_pixels, precision=precision)
        self.output = Path(output)
        self.samples_per_image = int(samples_per_image)
        self.seed = int(seed)
        if self.samples_per_image < 1:
            raise UserError("--samples-per-image must be at least 1")

    def params(self) -> dict:
        return {**self.backbone_params(), "facet": FACET,
                "input_size": self.input_size, "samples_per_image": self.samples_per_image, "seed": self.seed,
                "max_pixels": self.max_pixels}

    @classmethod
    def from_params(cls, params: dict) -> "PatchSampleJob":
        job = cls.__new__(cls)
        job.__dict__.update(output=None, extractor=None)
        return job

    def process(self, batch):
        self.load()
        records = []
        for key, image in batch:
            g = self.grid(image)
            flat = g.reshape(-1, g.shape[-1]).numpy()
            rng = np.random.default_rng(_item_seed(self.seed, key))
            take = np.sort(rng.choice(len(flat), min(self.samples_per_image, len(flat)), replace=False))
            part = save_part(self.output, key, flat[take])
            records.append({"part": part, "rows": int(len(take)), "dim": int(flat.shape[1])})
        return records

    def finalize(self, records: list[dict], info: dict) -> dict:
        dims = {r["dim"] for r in records}
        if len(dims) > 1:
            raise UserError(f"feature samples of different widths {sorted(dims)}")
        return {"info": info, "dim": dims.pop() if dims else 0, "parts": [[r["part"], r["rows"]] for r in records]}

    def write_output(self, path: Path, final: dict) -> None:
        write_feature_parts(path, final, parts_dir(self.output or path))


def dense_crf_labels(image: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Multi-label dense CRF (STEGO ``src/crf.py`` parameters): uint8 [H,W,3], logits [S,H,W] -> [H,W] labels."""
    import torch

    from seg_suite.pseudo.crf import densecrf_module

    dcrf, utils = densecrf_module()
    s, h, w = logits.shape
    probs = torch.softmax(torch.from_numpy(logits).float(), dim=0).numpy()
    crf = dcrf.DenseCRF2D(w, h, s)
    crf.setUnaryEnergy(np.ascontiguousarray(utils.unary_from_softmax(probs)))
    crf.addPairwiseGaussian(sxy=CRF_POS_XY_STD, compat=CRF_POS_W)
    crf.addPairwiseBilateral(sxy=CRF_BI_XY_STD, srgb=CRF_BI_RGB_STD, rgbim=np.ascontiguousarray(image, dtype=np.uint8),
                             compat=CRF_BI_W)
    q = np.array(crf.inference(CRF_MAX_ITER)).reshape(s, h, w)
    return q.argmax(0)


def assign_stuff(grid, centroids, image_hw: tuple[int, int], image: np.ndarray | None = None,
                 crf: bool = False) -> np.ndarray:
    """One image's cluster map.

    grid: [h, w, C] L2-normalised patch features (torch); centroids: [S, C] (torch, any norm).
    Returns [H, W] uint8 in 0..S-1: argmax of the bilinearly upsampled scaled cosine scores,
    or of the dense CRF on them (``crf``, needs ``image``).
    """
    import torch.nn.functional as F

    cent = F.normalize(centroids.float(), dim=1)
    logits = LOGIT_SCALE * (grid @ cent.T)  # [h, w, S]
    up = F.interpolate(logits.permute(2, 0, 1)[None], size=image_hw, mode="bilinear", align_corners=False)[0]
    labels = dense_crf_labels(image, up.numpy()) if crf else up.argmax(0).numpy()
    return labels.astype(np.uint8)


class StuffAssignJob(_GridJob):
    """Pass 2: nearest-centroid stuff maps for every image, written as ``<out_dir>/<name>.png``."""

    name = "stuff-maps"

    def __init__(self, centroids: np.ndarray, out_dir, backbone: str, crf: bool = False,
                 input_size: int = DEFAULT_INPUT_SIZE, weights=None, device: str = "cpu", random_init: bool = False,
                 max_pixels: int = DEFAULT_MAX_PIXELS, centroids_sha256: str | None = None,
                 precision: str = DEFAULT_PRECISION):
        super().__init__(backbone, input_size, weights=weights, device=device, random_init=random_init,
                         max_pixels=max_pixels, precision=precision)
        self.centroids = np.asarray(centroids, np.float32)
        if self.centroids.ndim != 2 or not 1 <= len(self.centroids) <= 255:
            raise UserError(f"need 1..255 stuff centroids as a [S, D] array, got shape {self.centroids.shape}")
        self.out_dir = Path(out_dir)
        self.crf = bool(crf)
        self.centroids_sha256 = centroids_sha256 or hashlib.sha256(self.centroids.tobytes()).hexdigest()

    def params(self) -> dict:
        return {**self.backbone_params(), "facet": FACET,
                "input_size": self.input_size, "num_clusters": int(len(self.centroids)),
                "centroids_sha256": self.centroids_sha256, "crf": self.crf, "out_dir": str(self.out_dir),
                "max_pixels": self.max_pixels}

    @classmethod
    def from_params(cls, params: dict) -> "StuffAssignJob":
        job = cls.__new__(cls)
        job.__dict__.update(num_clusters=params["num_clusters"], extractor=None)
        return job

    def process(self, batch):
        import torch

        self.load()
        if self.centroids.shape[1] != self.extractor.embed_dim:
            raise UserError(f"centroids have {self.centroids.shape[1]} dimensions, backbone {self.backbone} "
                            f"{self.extractor.embed_dim}")
        cent = torch.from_numpy(self.centroids)
        records = []
        for key, image in batch:
            name = png_name(key)
            try:  # a listed input outside the input root ("../x.png") must not write outside out_dir
                dest = output_path_under(self.out_dir, name, "stuff map name")
            except PathEscapeError as err:
                records.append(ItemError(str(err)))
                continue
            h, w = image.shape[:2]
            labels = assign_stuff(self.grid(image), cent, (h, w), image, self.crf)
            atomic_write_png(dest, labels)
            counts = np.bincount(labels.ravel(), minlength=len(self.centroids))
            records.append({"file_name": key, "sem_seg_file_name": name, "height": h, "width": w,
                            "clusters": np.flatnonzero(counts).tolist()})
        return records

    def finalize(self, records: list[dict], info: dict) -> dict:
        num = getattr(self, "num_clusters", None) or len(self.centroids)
        return {"info": info, "num_clusters": num, "ignore_label": 255, "images": records}


def fit_stuff_centroids(samples_index, clusterer) -> np.ndarray:
    """Fit ``clusterer`` on the memory-mapped samples of a :class:`PatchSampleJob` run; [S, D] centroids."""
    with open(samples_index, encoding="utf-8") as fh:
        index = json.load(fh)
    feats = np.load(Path(samples_index).with_name(index["features"]), mmap_mode="r")
    return clusterer.fit(feats).cluster_centers_


def load_centroids(path) -> tuple[np.ndarray, str]:
    try:
        return np.load(path).astype(np.float32), file_sha256(path)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read centroids {path}: {err}") from None


def make_stuff_pseudo_labels(items, out_dir, clusterer=None, *, backbone: str, centroids=None, crf: bool = False,
                             input_size: int = DEFAULT_INPUT_SIZE, samples_per_image: int = DEFAULT_SAMPLES_PER_IMAGE,
                             seed: int = 0, weights=None, device: str = "cpu", random_init: bool = False,
                             max_pixels: int = DEFAULT_MAX_PIXELS, precision: str = DEFAULT_PRECISION,
                             **run_kwargs):
    """The whole of ``seg-suite semantic-pseudo`` over runner work ``items``.

    Without ``centroids`` (a [S, D] ``.npy`` path): pass 1 samples patches into ``OUT_DIR/samples.json``,
    ``clusterer`` (a :class:`~seg_suite.pseudo.kmeans.MaskClusterer`) fits ``OUT_DIR/centroids.npy``
    (kept and reused by a ``resume``-d run). Pass 2 writes the maps and ``OUT_DIR/semantic.json``.
    Returns pass 2's :class:`RunSummary`, or None for a shard of pass 1 (merge the sample shards into
    ``OUT_DIR/samples.json``, then call again with ``resume=True``).
    """
    from seg_suite.pseudo.runner import run_job

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    common = dict(input_size=input_size, weights=weights, device=device, random_init=random_init,
                  max_pixels=max_pixels, precision=precision)
    samples, fitted = out / "samples.json", out / "centroids.npy"
    resume, shard = run_kwargs.get("resume", False), run_kwargs.get("shard")
    if run_kwargs.get("overwrite"):
        for p in (samples, samples.with_suffix(".npy"), fitted):
            p.unlink(missing_ok=True)
    if centroids is not None:
        cent, digest = load_centroids(centroids)
    elif fitted.exists() and resume:
        cent, digest = load_centroids(fitted)
    else:
        if clusterer is None:
            raise UserError("give either centroids or a clusterer to fit them")
        if samples.exists() and not resume:
            raise UserError(f"{samples} exists from an earlier run; pass --resume to use it or --overwrite")
        job = PatchSampleJob(samples, backbone, samples_per_image=samples_per_image, seed=seed, **common).load()
        run_job(job, items, samples, **run_kwargs)
        if shard is not None and shard.num_shards > 1 and not samples.exists():
            return None
        atomic_write_npy(fitted, fit_stuff_centroids(samples, clusterer))
        import shutil

        shutil.rmtree(parts_dir(samples), ignore_errors=True)
        cent, digest = load_centroids(fitted)
    job = StuffAssignJob(cent, out, backbone, crf=crf, centroids_sha256=digest, **common).load()
    return run_job(job, items, out / "semantic.json", **run_kwargs)

"""Semantic clustering of instance pseudo-masks (U2Seg): one feature per mask, k-means, cluster ids.

    cluster_mask_file("maskcut.json", "images/", "clustered.json", MaskClusterer(n_clusters=300),
                      backbone="dino_vitb16")   # features (runner) -> k-means -> category = cluster id 1..K

or step by step: :func:`extract_mask_features` (the runner) -> :func:`load_features` (memmap) ->
:class:`MaskClusterer` ``fit``/``predict`` -> :func:`assign_clusters`.

Per-mask features (:class:`MaskFeatureJob`, a job of the one runner, so extraction is sharded,
journaled and resumable):

- ``"crop_cls"`` (default, as U2Seg): the mask's bounding-box crop of the image, resized to the
  backbone input (``input_size`` 224, DINO's training resolution), through the backbone; its
  CLS token. U2Seg crops each CutLER box and embeds it with DINO (``u2seg/Instance_Clustering``);
  the crop keeps its background pixels, as there.
- ``"pooled"``: the image resized so its longer side is ``input_size`` (default 480, MaskCut's
  size), its last-layer patch tokens averaged under the mask (area-weighted on the patch grid).
  The weight-free ``handcrafted`` backbone needs this mode: its CLS is a mean of per-image
  standardised channels, nearly the same vector for every crop; ``"auto"`` (the default)
  picks ``pooled`` for it and ``crop_cls`` for the ViTs.

Every feature is L2-normalised. Each image's rows are written to ``<stem>.parts/`` as they are
made; the final write assembles them into ONE memory-mapped ``<stem>.npy`` [N, D] float32 next to
the index ``<stem>.json`` (the runner's output), whose ``ann_ids`` give the annotation of each row.
RAM then stays bounded by one image's masks, and the clustering reads the file in batches.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from seg_suite.errors import UserError
from seg_suite.features.precision import DEFAULT_PRECISION
from seg_suite.io.coco import annotations_by_file, decode_image_masks, read_coco
from seg_suite.io.files import atomic_write_json, atomic_write_npy, file_sha256
from seg_suite.io.images import DEFAULT_MAX_PIXELS, load_image
from seg_suite.io.masks import MaskFormatError, mask_to_bbox
from seg_suite.pseudo.feature_job import BackboneJob, parts_dir, resize_to_grid, save_part, write_feature_parts
from seg_suite.pseudo.inputs import WorkItem, image_items
from seg_suite.pseudo.jobs import ItemError, coco_mask_counts
from seg_suite.pseudo.kmeans import DEFAULT_N_CLUSTERS, MaskClusterer  # noqa: F401 - re-exported

FEATURE_MODES = ("auto", "crop_cls", "pooled")
DEFAULT_INPUT_SIZE = {"crop_cls": 224, "pooled": 480}  # DINO's training size; MaskCut's fixed size
MASKS_PER_FORWARD = 32  # crops per backbone call: bounds memory on images with many masks


# ------------------------------------------------------------------------ helpers
def check_mask_file(coco: dict, path: str | os.PathLike) -> dict:
    """Refuse (one line) a COCO file whose annotations cannot each get a feature: an id and a segmentation."""
    for ann in coco["annotations"]:
        if "id" not in ann or ann.get("segmentation") is None:
            raise UserError(f"{path}: annotation {ann.get('id')} of image {ann['image_id']} lacks an 'id' or a "
                            f"'segmentation'; every mask needs both to be clustered")
    return coco


def resolve_mode(mode: str, backbone: str) -> str:
    """``auto``: ``crop_cls`` for the ViTs (U2Seg), ``pooled`` for ``handcrafted``, whose CLS is nearly
    constant (ARI 0.08 against 0.60-1.00 pooled, on the synthetic set's true masks)."""
    from seg_suite.features import HANDCRAFTED

    if mode not in FEATURE_MODES:
        raise UserError(f"unknown mask feature {mode!r}; choose from {', '.join(FEATURE_MODES)}")
    if mode == "auto":
        return "pooled" if backbone == HANDCRAFTED else "crop_cls"
    return mode


# ---------------------------------------------------------------------- the job
class MaskFeatureJob(BackboneJob):
    """One L2-normalised feature per annotation of a COCO mask file (see the module docstring).

    Args:
        annotations: the COCO (pseudo-)mask file; its SHA-256 is part of ``params``, so a resumed
            run refuses a changed file.
        output: the final index file (``<stem>.json``); rows go to ``<stem>.parts/`` and then
            ``<stem>.npy``.
        mode: ``"crop_cls"``, ``"pooled"`` or ``"auto"`` (:func:`resolve_mode`). input_size: None = the
            mode's default.
        backbone, weights, device, random_init, max_pixels, precision: as for MaskCut.
    """

    name = "mask-features"
    heavy_attrs = ("extractor", "_index")

    def __init__(self, annotations, output, backbone: str, mode: str = "auto", input_size: int | None = None,
                 weights=None, device: str = "cpu", random_init: bool = False,
                 max_pixels: int = DEFAULT_MAX_PIXELS, annotations_sha256: str | None = None,
                 precision: str = DEFAULT_PRECISION):
        super().__init__(backbone, weights, device, random_init, max_pixels, precision)
        self.annotations = Path(annotations)
        self.output = Path(output)
        self.mode = mode = resolve_mode(mode, backbone)
        self.input_size = int(input_size or DEFAULT_INPUT_SIZE[mode])
        if self.input_size < self.patch_size:
            raise UserError(f"--input-size {self.input_size} is smaller than one {self.patch_size}-pixel patch")
        self.annotations_sha256 = annotations_sha256 or file_sha256(self.annotations)
        self._index = None

    def params(self) -> dict:
        return {"annotations_sha256": self.annotations_sha256, **self.backbone_params(), "mode": self.mode, "input_size": self.input_size,
                "max_pixels": self.max_pixels}

    @classmethod
    def from_params(cls, params: dict, output=None) -> "MaskFeatureJob":
        job = cls.__new__(cls)
        job.__dict__.update(mode=params["mode"], output=Path(output) if output else None, extractor=None, _index=None)
        return job

    def _annotations_for(self, key: str) -> list[dict]:
        if self._index is None:  # loaded lazily: in each DataLoader worker, never pickled
            self._index = annotations_by_file(read_coco(self.annotations))
        return self._index.get(key, [])

    def prepare(self, item: WorkItem):
        anns = self._annotations_for(item.key)
        image = load_image(item.path, max_pixels=self.max_pixels)
        h, w = image.shape[:2]
        try:
            decoded = decode_image_masks(item.key, anns, h, w)
        except MaskFormatError as err:
            raise ItemError(str(err)) from None
        masks, ids = [], []
        for ann, mask in zip(anns, decoded):
            if mask.any():  # an empty mask has no feature; it is left out (and unclustered)
                masks.append(mask)
                ids.append(int(ann["id"]))
        return item.key, image, masks, ids

    def process(self, batch):
        self.load()
        records = []
        for key, image, masks, ids in batch:
            feats = self._crop_cls(image, masks) if self.mode == "crop_cls" else self._pooled(image, masks)
            part = save_part(self.output, key, feats) if ids else None
            records.append({"ann_ids": ids, "part": part, "dim": int(feats.shape[1])})
        return records

    def _crop_cls(self, image: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        out = []
        for start in range(0, len(masks), MASKS_PER_FORWARD):
            crops = []
            for mask in masks[start:start + MASKS_PER_FORWARD]:
                x, y, bw, bh = (int(round(v)) for v in mask_to_bbox(mask))
                crop = torch.tensor(image[y:y + max(bh, 1), x:x + max(bw, 1)])
                crop = crop.permute(2, 0, 1)[None].float()
                crops.append(F.interpolate(crop, size=(self.input_size, self.input_size), mode="bilinear",
                                           align_corners=False, antialias=True))
            batch = torch.cat(crops).round().clamp(0, 255).to(torch.uint8)
            out.append(F.normalize(self.features(batch, "cls").float(), dim=1).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.extractor.embed_dim), np.float32)

    def _pooled(self, image: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        x = resize_to_grid(image, self.input_size, self.patch_size)
        grid = self.features(x, "token")[0].float().cpu()  # [h, w, C]
        gh, gw = grid.shape[:2]
        if not masks:
            return np.zeros((0, grid.shape[-1]), np.float32)
        m = torch.from_numpy(np.stack(masks)).float()[:, None]
        weights = F.interpolate(m, size=(gh, gw), mode="area")[:, 0].flatten(1)  # [n, h*w]: covered fraction
        # A mask thinner than a patch can still vanish on the grid: fall back to the patch under its centre.
        for i in torch.nonzero(weights.sum(1) <= 0).flatten().tolist():
            ys, xs = np.nonzero(masks[i])
            cy = min(int(ys.mean() * gh / masks[i].shape[0]), gh - 1)
            cx = min(int(xs.mean() * gw / masks[i].shape[1]), gw - 1)
            weights[i, cy * gw + cx] = 1.0
        pooled = weights @ grid.reshape(gh * gw, -1) / weights.sum(1, keepdim=True)
        return F.normalize(pooled, dim=1).numpy()

    def finalize(self, records: list[dict], info: dict) -> dict:
        dims = {r["dim"] for r in records}
        if len(dims) > 1:
            raise UserError(f"feature parts of different widths {sorted(dims)}: mixed backbones in one run")
        return {"info": info, "dim": dims.pop() if dims else 0,
                "ann_ids": [a for r in records for a in r["ann_ids"]],
                "parts": [[r["part"], len(r["ann_ids"])] for r in records if r["part"]]}

    def write_output(self, path: Path, final: dict) -> None:
        write_feature_parts(path, final, parts_dir(self.output or path))


# ------------------------------------------------------------------ dataset level
def extract_mask_features(annotations, image_root, output, *, backbone: str, mode: str = "auto",
                          input_size: int | None = None, weights=None, device: str = "cpu",
                          random_init: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
                          precision: str = DEFAULT_PRECISION, keep_parts: bool = False, **run_kwargs):
    """Run :class:`MaskFeatureJob` through the runner; returns its :class:`RunSummary`.

    ``run_kwargs`` go to :func:`seg_suite.pseudo.runner.run_job` (shard, resume, batch_size...).
    Once the unsharded output is complete, the parts folder is deleted unless ``keep_parts``.
    """
    from seg_suite.pseudo.runner import run_job

    coco = check_mask_file(read_coco(annotations), annotations)
    job = MaskFeatureJob(annotations, output, backbone, mode=mode, input_size=input_size, weights=weights,
                         device=device, random_init=random_init, max_pixels=max_pixels, precision=precision).load()
    summary = run_job(job, image_items(coco, image_root), output, **run_kwargs)
    shard = run_kwargs.get("shard")
    if not keep_parts and (shard is None or shard.num_shards == 1) and Path(output).exists():
        shutil.rmtree(parts_dir(output), ignore_errors=True)
    return summary


def load_features(index_path) -> tuple[np.ndarray, list[int], dict]:
    """The memory-mapped features [N, D], their annotation ids and the index of a features run."""
    with open(index_path, encoding="utf-8") as fh:
        index = json.load(fh)
    npy = Path(index_path).with_name(index["features"])
    feats = np.load(npy, mmap_mode="r")
    if feats.shape[0] != len(index["ann_ids"]):
        raise UserError(f"{npy} has {feats.shape[0]} rows but {index_path} lists {len(index['ann_ids'])}")
    return feats, index["ann_ids"], index


def cluster_categories(n_clusters: int, isthing: int = 1, first_id: int = 1, prefix: str = "cluster") -> list[dict]:
    """COCO categories for cluster ids ``first_id .. first_id + n_clusters - 1``."""
    return [{"id": first_id + k, "name": f"{prefix}_{k + 1}", "supercategory": prefix, "isthing": isthing}
            for k in range(n_clusters)]


def assign_clusters(coco: dict, ann_ids, labels: np.ndarray, n_clusters: int, info: dict | None = None) -> dict:
    """``coco`` with ``category_id = label + 1`` (1..K) and K categories; annotations without a
    feature (empty masks, failed images) are dropped and counted in ``info["clustering"]``."""
    label_of = dict(zip((int(a) for a in ann_ids), (int(l) + 1 for l in labels)))
    anns = [dict(a, category_id=label_of[a["id"]]) for a in coco["annotations"] if a["id"] in label_of]
    out = {k: v for k, v in coco.items() if k not in ("annotations", "categories", "info")}
    out["info"] = dict(coco.get("info") or {})
    out["info"]["clustering"] = dict(info or {}, num_clusters=n_clusters, num_clustered=len(anns),
                                     num_dropped=len(coco["annotations"]) - len(anns))
    out["annotations"] = anns
    out["categories"] = cluster_categories(n_clusters)
    return out


def cluster_mask_file(annotations, image_root, output, clusterer: MaskClusterer, *, backbone: str,
                      mode: str = "auto", input_size: int | None = None, weights=None, device: str = "cpu",
                      random_init: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
                      precision: str = DEFAULT_PRECISION, fit: bool = True, **run_kwargs) -> dict | None:
    """The whole of ``seg-suite cluster``: features (runner) -> k-means -> clustered COCO file.

    Writes ``output`` (category = cluster id 1..K), ``<stem>.centroids.npy`` (when ``fit``) and
    ``<stem>.features.json/.npy``. ``fit=False`` uses ``clusterer``'s given centres (e.g.
    :meth:`MaskClusterer.from_centers`). Returns a short summary (``clustered`` False, and nothing
    written but the features, when no image could be read), or None for a shard of a sharded run
    (merge the feature shards, then call again with ``resume=True``).
    """
    out = Path(output)
    feat_index = out.with_name(out.stem + ".features.json")
    summary = extract_mask_features(annotations, image_root, feat_index, backbone=backbone, mode=mode,
                                    input_size=input_size, weights=weights, device=device, random_init=random_init,
                                    max_pixels=max_pixels, precision=precision, **run_kwargs)
    shard = run_kwargs.get("shard")
    if shard is not None and shard.num_shards > 1:
        return None
    if not summary.skipped and summary.num_items and summary.num_failed >= summary.num_items:
        # every image failed (reasons in the failures file): nothing to cluster, and no output
        return {"features": summary, "clustered": False, "num_masks": 0, "num_clusters": clusterer.n_clusters,
                "non_empty": 0, "largest": 0}
    feats, ann_ids, index = load_features(feat_index)
    centroids = out.with_name(out.stem + ".centroids.npy")
    if fit:
        clusterer.fit(feats)
    elif clusterer.cluster_centers_.shape[1] != feats.shape[1]:
        raise UserError(f"the centroids have {clusterer.cluster_centers_.shape[1]} dimensions, the features "
                        f"{feats.shape[1]}")
    labels = clusterer.predict(feats)
    info = {"features": index["info"]["params"], "kmeans": clusterer.get_params(),
            "centroids": centroids.name if fit else "given"}
    coco = assign_clusters(read_coco(annotations), ann_ids, labels, clusterer.n_clusters, info)
    if fit:
        atomic_write_npy(centroids, clusterer.cluster_centers_)
    atomic_write_json(out, coco)
    sizes = np.bincount(labels, minlength=clusterer.n_clusters)
    return {"features": summary, "clustered": True, "num_masks": int(len(labels)), "num_clusters": clusterer.n_clusters,
            "non_empty": int((sizes > 0).sum()), "largest": int(sizes.max()) if len(sizes) else 0,
            "masks": coco_mask_counts(coco)}

"""Panoptic pseudo-labels: clustered instances + stuff clusters -> COCO panoptic PNG + JSON (U2Seg).

The merge rules are U2Seg's ``datasets/prepare_ours/generate_pseudo_panoptic.py``:

1. instances are painted in DESCENDING area, so a smaller one lies on top of a larger one it
   overlaps; an instance left with no visible pixel is dropped. (U2Seg sorts by box area; we sort
   by mask area, the brief's rule, which differs only for odd shapes.)
2. each stuff cluster then fills the still unoccupied pixels it covers, but only when at most
   ``max_overlap`` (70%) of ITS pixels fall on instances; otherwise it is skipped (those pixels
   stay VOID).
3. category ids: things 1..K (the instance clusters), stuff K+1..K+S (stuff cluster s -> K+1+s),
   with ``isthing`` set.

:class:`PanopticJob` runs this over a dataset through the one runner and writes the layout of the
synthetic set (``seg_suite.data.synthetic``), so the result registers like it::

    ROOT/annotations/panoptic_SPLIT.json     COCO panoptic (images, annotations, categories)
    ROOT/panoptic/SPLIT/<name>.png           RGB id PNG (id = R + 256 G + 256^2 B)
    ROOT/semantic/SPLIT/<name>.png           detectron2 panoptic-semantic map: contiguous index over
                                             all K + S categories in id order, 255 = void (uint16 PNG,
                                             void 65535, when K + S > 255)
    ROOT/annotations/instances_SPLIT.json    the visible thing segments as COCO instances
    ROOT/images/SPLIT -> the image folder    a symlink, made when absent

``<name>`` is the image's ``file_name`` with a ``.png`` suffix (sub-folders kept). A ``file_name``
that leaves the image root, the stuff folder or the output folders fails its image (listed in
the failures with the reason); so does a mask that does not fit its image, checked before it is
decoded. Never imports detectron2.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from seg_suite.errors import UserError
from seg_suite.io.coco import annotations_by_file, decode_image_masks, read_coco
from seg_suite.io.files import atomic_write_json, atomic_write_png, file_sha256
from seg_suite.io.masks import MaskFormatError, mask_to_bbox, mask_to_rle
from seg_suite.io.paths import PathEscapeError, output_path_under, resolve_under, safe_relative
from seg_suite.pseudo.inputs import WorkItem, image_items
from seg_suite.pseudo.jobs import ItemError, Job

MAX_STUFF_OVERLAP = 0.7  # U2Seg generate_pseudo_panoptic.py: skip a stuff cluster > 70% under instances
STUFF_IGNORE = 255  # value of unlabelled pixels in stuff maps (seg-suite semantic-pseudo writes 0..S-1, 255)


def assemble_panoptic(instances, stuff: np.ndarray | None, num_things: int, num_stuff: int = 0,
                      max_overlap: float = MAX_STUFF_OVERLAP, shape: tuple[int, int] | None = None):
    """Merge one image's instances and stuff map.

    Args:
        instances: list of ``(mask bool [H, W], category_id in 1..K)``.
        stuff: [H, W] stuff-cluster map (0..S-1, ``STUFF_IGNORE`` unlabelled), or None.
        num_things: K. num_stuff: S (stuff cluster s becomes category K + 1 + s).
        shape: (H, W) when there are neither instances nor a stuff map.
    Returns:
        ids: [H, W] uint32 segment ids (0 = VOID), segments: ``segments_info`` in id order, each
        ``{"id", "category_id", "isthing", "iscrowd", "area", "bbox"}``; thing segments also carry
        ``"source"``, the index of their instance in ``instances``.
    """
    if shape is None:
        shape = stuff.shape if stuff is not None else instances[0][0].shape
    ids = np.zeros(shape, np.uint32)
    order = sorted(range(len(instances)), key=lambda i: -int(np.count_nonzero(instances[i][0])))  # stable
    painted = []
    for n, i in enumerate(order, start=1):
        mask, cat = instances[i]
        if mask.shape != tuple(shape):
            raise ValueError(f"instance mask of shape {mask.shape}, image {tuple(shape)}")
        if not 1 <= int(cat) <= num_things:
            raise ValueError(f"instance category {cat} outside the thing ids 1..{num_things}")
        ids[mask] = n
        painted.append((n, i, int(cat)))
    segments = []
    next_id = 1
    final = np.zeros_like(ids)
    for n, i, cat in painted:  # renumber the visible ones 1, 2, ... in painting order
        visible = ids == n
        if visible.any():
            final[visible] = next_id
            segments.append({"id": next_id, "category_id": cat, "isthing": 1, "iscrowd": 0, "source": i})
            next_id += 1
    if stuff is not None:
        if stuff.shape != tuple(shape):
            raise ValueError(f"stuff map of shape {stuff.shape}, image {tuple(shape)}")
        occupied = final > 0
        for s in range(num_stuff):
            region = stuff == s
            total = int(np.count_nonzero(region))
            if total == 0:
                continue
            free = region & ~occupied
            if not free.any() or (total - np.count_nonzero(free)) / total > max_overlap:
                continue
            final[free] = next_id
            segments.append({"id": next_id, "category_id": num_things + 1 + s, "isthing": 0, "iscrowd": 0})
            next_id += 1
    for seg in segments:
        m = final == seg["id"]
        seg["area"] = int(np.count_nonzero(m))
        seg["bbox"] = mask_to_bbox(m)
    return final, segments


def panoptic_categories(num_things: int, num_stuff: int, seed: int = 0) -> list[dict]:
    """Things 1..K (``cluster_k``) then stuff K+1..K+S (``stuff_s``), with isthing and a display colour."""
    rng = np.random.default_rng(seed)
    colors = rng.integers(40, 256, size=(num_things + num_stuff, 3)).tolist()
    cats = [{"id": k + 1, "name": f"cluster_{k + 1}", "supercategory": "thing", "isthing": 1, "color": colors[k]}
            for k in range(num_things)]
    cats += [{"id": num_things + 1 + s, "name": f"stuff_{s + 1}", "supercategory": "stuff", "isthing": 0,
              "color": colors[num_things + s]} for s in range(num_stuff)]
    return cats


def semantic_from_panoptic(ids: np.ndarray, segments: list[dict], num_categories: int) -> np.ndarray:
    """detectron2 panoptic-semantic map: category id c -> contiguous c - 1 (ids are 1..K+S), void 255.

    uint8 when there are at most 255 categories, else uint16 with void 65535.
    """
    dtype, void = (np.uint8, 255) if num_categories <= 255 else (np.uint16, 65535)
    lut = np.full(int(ids.max(initial=0)) + 1, void, np.int64)
    for seg in segments:
        lut[seg["id"]] = seg["category_id"] - 1
    return lut[ids].astype(dtype)


class PanopticJob(Job):
    """Panoptic pseudo-labels for every image of a clustered instance file (see the module docstring).

    Args:
        instances: clustered COCO file (``seg-suite cluster``): category ids 1..K.
        root, split: output root and split name (the synthetic set's layout).
        num_things: K (default: the number of categories in ``instances``).
        stuff_dir: folder of stuff-cluster PNGs (``seg-suite semantic-pseudo``: values 0..S-1, 255), named
            like the images with ``.png``; None gives things-only panoptic labels.
        num_stuff: S. max_overlap: the 70% rule.
    """

    name = "panoptic"
    heavy_attrs = ("_index",)

    def __init__(self, instances, root, split: str, num_stuff: int, stuff_dir=None, num_things: int | None = None,
                 max_overlap: float = MAX_STUFF_OVERLAP, instances_sha256: str | None = None):
        self.instances = Path(instances)
        self.root = Path(root)
        self.split = split
        self.stuff_dir = Path(stuff_dir) if stuff_dir else None
        self.num_stuff = int(num_stuff) if stuff_dir else 0
        self.max_overlap = float(max_overlap)
        if not 0 <= self.max_overlap <= 1:
            raise UserError(f"--max-stuff-overlap must be in [0, 1], got {max_overlap}")
        if self.stuff_dir is not None and not self.stuff_dir.is_dir():
            raise UserError(f"stuff map folder not found: {self.stuff_dir}")
        if num_things is None:
            num_things = max([c["id"] for c in read_coco(self.instances).get("categories", [])], default=0)
        self.num_things = int(num_things)
        if self.num_things < 1:
            raise UserError(f"{instances} lists no categories; cluster it first (seg-suite cluster)")
        self.instances_sha256 = instances_sha256 or file_sha256(self.instances)
        self._index = None

    def params(self) -> dict:
        return {"instances_sha256": self.instances_sha256, "num_things": self.num_things,
                "num_stuff": self.num_stuff, "stuff_dir": str(self.stuff_dir) if self.stuff_dir else None,
                "max_overlap": self.max_overlap, "root": str(self.root), "split": self.split}

    @classmethod
    def from_params(cls, params: dict) -> "PanopticJob":
        job = cls.__new__(cls)
        job.__dict__.update(root=Path(params["root"]), split=params["split"], num_things=params["num_things"],
                            num_stuff=params["num_stuff"], _index=None)
        return job

    def prepare(self, item: WorkItem):
        if self._index is None:
            self._index = annotations_by_file(read_coco(self.instances))
        anns = self._index.get(item.key, [])
        if not anns and item.key not in self._index:
            raise ItemError(f"{item.key} is not in {self.instances}")
        from PIL import Image

        path = item.path
        try:
            name = safe_relative(item.key, "file_name").with_suffix(".png").as_posix()
            # decided here, so that a name leading out of an output folder fails this item before any write
            dests = (output_path_under(self.root / "panoptic" / self.split, name, "file_name"),
                     output_path_under(self.root / "semantic" / self.split, name, "file_name"))
        except PathEscapeError as err:
            raise ItemError(str(err)) from None
        try:
            with Image.open(path) as im:  # only the size is needed
                w, h = im.size
        except (OSError, Image.DecompressionBombError) as err:
            raise ItemError(f"cannot read image {path} ({err})") from None
        try:
            decoded = decode_image_masks(item.key, anns, h, w)
        except MaskFormatError as err:
            raise ItemError(str(err)) from None
        instances = []
        for ann, mask in zip(anns, decoded):
            cat = ann.get("category_id")
            if not (isinstance(cat, int) and not isinstance(cat, bool) and 1 <= cat <= self.num_things):
                raise ItemError(f"annotation {ann.get('id')} has category {ann.get('category_id')!r}, not a "
                                f"thing id 1..{self.num_things}")
            instances.append((mask, int(ann["category_id"]), float(ann.get("score", 1.0))))
        stuff = None
        if self.stuff_dir is not None:
            stuff_path = resolve_under(self.stuff_dir, name, "file_name")
            try:
                with Image.open(stuff_path) as im:
                    if im.size != (w, h):  # before decoding: a map of the wrong size is refused unread
                        raise ItemError(f"stuff map {stuff_path} is {im.size[0]}x{im.size[1]}, the image {w}x{h}")
                    stuff = np.asarray(im)
            except (OSError, Image.DecompressionBombError) as err:
                raise ItemError(f"stuff map {stuff_path} cannot be read ({err})") from None
            if stuff.shape != (h, w):
                raise ItemError(f"stuff map {stuff_path} is {stuff.shape[1::-1]}, the image {w}x{h}")
            bad = (stuff != STUFF_IGNORE) & (stuff >= self.num_stuff)
            if bad.any():
                raise ItemError(f"stuff map {stuff_path} holds cluster {int(stuff[bad].max())} "
                                f"but --num-stuff is {self.num_stuff}")
        return item.key, (h, w), instances, stuff, name, dests

    def process(self, batch):
        from seg_suite.io.panoptic import id_to_rgb

        records = []
        for key, (h, w), instances, stuff, name, (pan_path, sem_path) in batch:
            ids, segments = assemble_panoptic([(m, c) for m, c, _ in instances], stuff, self.num_things,
                                              self.num_stuff, self.max_overlap, shape=(h, w))
            atomic_write_png(pan_path, id_to_rgb(ids))
            atomic_write_png(sem_path, semantic_from_panoptic(ids, segments, self.num_things + self.num_stuff))
            things = []
            for seg in segments:
                if seg["isthing"]:
                    mask = ids == seg["id"]
                    things.append({"category_id": seg["category_id"], "segmentation": mask_to_rle(mask),
                                   "area": seg["area"], "bbox": seg["bbox"], "iscrowd": 0,
                                   "score": instances[seg.pop("source")][2]})
            records.append({"image": {"file_name": key, "width": w, "height": h},
                            "panoptic": {"file_name": name, "segments_info": segments},
                            "instances": things})
        return records

    def finalize(self, records: list[dict], info: dict) -> dict:
        images, annotations, instances = [], [], []
        for image_id, rec in enumerate(records, start=1):
            images.append({"id": image_id, **rec["image"]})
            annotations.append({"image_id": image_id, **rec["panoptic"]})
            for ann in rec["instances"]:
                instances.append({"id": len(instances) + 1, "image_id": image_id, **ann})
        cats = panoptic_categories(self.num_things, self.num_stuff)
        return {"panoptic": {"info": info, "images": images, "annotations": annotations, "categories": cats},
                "instances": {"info": info, "images": images, "annotations": instances,
                              "categories": [c for c in cats if c["isthing"]]}}

    def write_output(self, path: Path, final: dict) -> None:
        atomic_write_json(self.root / "annotations" / f"instances_{self.split}.json", final["instances"])
        atomic_write_json(path, final["panoptic"])


def panoptic_output(root, split: str) -> Path:
    """Where :class:`PanopticJob` writes its panoptic JSON (the runner's output file)."""
    return Path(root) / "annotations" / f"panoptic_{split}.json"


def link_images(root, split: str, image_root) -> Path:
    """Make ``ROOT/images/SPLIT`` point at ``image_root`` (a symlink) unless it already exists."""
    link = Path(root) / "images" / split
    if not link.exists() and not link.is_symlink():
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(Path(image_root).resolve(), link, target_is_directory=True)
    return link


def make_panoptic_pseudo_labels(instances, image_root, root, split: str = "train", *, stuff_dir=None,
                                num_stuff: int = 27, num_things: int | None = None,
                                max_overlap: float = MAX_STUFF_OVERLAP, link: bool = True, **run_kwargs):
    """Run :class:`PanopticJob` through the runner over the images of ``instances``; returns the summary."""
    from seg_suite.pseudo.runner import run_job

    job = PanopticJob(instances, root, split, num_stuff, stuff_dir=stuff_dir, num_things=num_things,
                      max_overlap=max_overlap)
    summary = run_job(job, image_items(read_coco(instances), image_root), panoptic_output(root, split), **run_kwargs)
    if link:
        link_images(root, split, image_root)
    return summary

"""Panoptic pseudo-labels: clustered instances + stuff clusters -> COCO panoptic PNG + JSON (U2Seg).

The merge rules (U2Seg's) are :mod:`seg_suite.pseudo.panoptic_rules`. :class:`PanopticJob` runs them
over a dataset through the one runner and writes the layout of the synthetic set
(``seg_suite.data.synthetic``), so the result registers like it::

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
from seg_suite.io.masks import MaskFormatError, mask_to_rle
from seg_suite.io.paths import PathEscapeError, output_path_under, resolve_under, safe_relative
from seg_suite.pseudo.inputs import WorkItem, image_items
from seg_suite.pseudo.jobs import ItemError, Job
from seg_suite.pseudo.panoptic_rules import (  # noqa: F401 - the rules are part of this module's API
    MAX_STUFF_OVERLAP, STUFF_IGNORE, assemble_panoptic, panoptic_categories, semantic_from_panoptic)


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

"""The job interface of the dataset runner (:mod:`seg_suite.pseudo.runner`).

A job turns one work item into one JSON record (``prepare`` in DataLoader workers, then
``process`` on the device) and the sorted records into the final output (``finalize``).
The full contract is in the runner's module docstring. :class:`CocoMaskJob` is the base for
every generator that writes a COCO instance file (MaskCut, SAM, motion masks).
"""

from __future__ import annotations

import abc
import importlib
import json
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator

import numpy as np

from seg_suite.errors import UserError
from seg_suite.io.files import atomic_write, atomic_write_json, json_default, load_json
from seg_suite.io.masks import mask_area, mask_to_bbox, mask_to_rle
from seg_suite.pseudo.inputs import WorkItem


class ItemError(Exception):
    """A work item cannot be processed; ``str(err)`` is a one-line reason for failures.jsonl."""


class Job(abc.ABC):
    """Base class of dataset jobs; the contract is in :mod:`seg_suite.pseudo.runner`'s docstring."""

    name: ClassVar[str] = "job"
    unit: ClassVar[str] = "img"
    heavy_attrs: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def params(self) -> dict:
        """See the runner's module docstring."""

    @classmethod
    def from_params(cls, params: dict) -> "Job":
        """Rebuild a cheap copy of the job (``merge`` needs it); jobs that cannot be merged keep this."""
        raise UserError(f"shards of a {cls.name!r} job cannot be merged: {cls.__name__} does not support "
                        "rebuilding from its recorded params; rerun it unsharded")

    @abc.abstractmethod
    def prepare(self, item: WorkItem) -> Any:
        """See the runner's module docstring."""

    @abc.abstractmethod
    def process(self, batch: list[Any]) -> list[dict | ItemError]:
        """See the runner's module docstring."""

    @abc.abstractmethod
    def finalize(self, records: list[dict], info: dict) -> Any:
        """The job's output object from all records (see the runner's module docstring)."""

    def write_output(self, path: Path, final: Any) -> None:
        atomic_write_json(path, final)

    def write_records(self, path: Path, records: Callable[[], Iterator[dict]], info: dict) -> dict | None:
        """Write the final output from ``records()``, a fresh iterator over the sorted records each call;
        returns its :meth:`mask_counts`.

        The runner calls this; by default it is ``write_output(path, finalize(list(records()), info))``.
        A job whose output can be written record by record overrides it so that the records never
        all sit in memory (see :class:`CocoMaskJob`).
        """
        final = self.finalize(list(records()), info)
        self.write_output(path, final)
        return self.mask_counts(final)

    def read_info(self, path: Path) -> dict | None:
        """The ``info`` of a finished output, to check it on ``--resume`` (None: unknown)."""
        obj = load_json(path, "finished output")
        return obj.get("info") if isinstance(obj, dict) else None

    def mask_counts(self, final: Any) -> dict | None:
        """``{"images", "masks", "empty"}`` of the final output, for the run's summary line (None: no masks)."""
        return None

    def runtime_info(self) -> dict:
        """Execution details for the log file (device...), never part of the output."""
        return {}

    def output_folders(self, items: list[WorkItem]) -> list[Path]:
        """Folders besides the output's that ``process`` writes into for ``items`` (masks, frames...).

        The runner proves each writable before the first item, so that a read-only or misspelt
        destination stops the run at once instead of failing every item.
        """
        return []

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for attr in self.heavy_attrs:
            state[attr] = None
        return state


class CocoMaskJob(Job):
    """A job whose output is a COCO instance file.

    Records are ``{"images": [{"file_name", "width", "height", ...}], "annotations":
    [[ann, ...] for each image]}``; an ``ann`` holds ``segmentation`` (RLE), ``bbox``,
    ``area``, ``score`` and optionally ``category_id`` (default 1) and ``iscrowd`` (default 0)
    (see :meth:`mask_annotation`). Image and annotation ids are assigned 1, 2, ... in key order
    (then record order), so a resumed or merged run numbers them exactly as an uninterrupted one.
    """

    categories: ClassVar[list[dict]] = [{"id": 1, "name": "object"}]

    @staticmethod
    def mask_annotation(mask: np.ndarray, score: float, category_id: int = 1) -> dict:
        """A COCO annotation (without ids) for a bool HxW mask at the image's true size."""
        return {
            "category_id": int(category_id),
            "segmentation": mask_to_rle(mask),
            "area": mask_area(mask),
            "bbox": mask_to_bbox(mask),
            "score": float(score),
            "iscrowd": 0,
        }

    def coco_categories(self) -> list[dict]:
        return [dict(c) for c in self.categories]

    def _images(self, records: Iterable[dict]) -> Iterator[dict]:
        image_id = 0
        for record in records:
            for image, _anns in zip(record["images"], record["annotations"], strict=True):
                image_id += 1
                yield {"id": image_id, **image}

    def _annotations(self, records: Iterable[dict]) -> Iterator[dict]:
        image_id = ann_id = 0
        for record in records:
            for _image, anns in zip(record["images"], record["annotations"], strict=True):
                image_id += 1
                for ann in anns:
                    ann_id += 1
                    extra = {k: v for k, v in ann.items() if k not in ("id", "image_id", "category_id", "iscrowd")}
                    yield {"id": ann_id, "image_id": image_id, "category_id": ann.get("category_id", 1),
                           "iscrowd": ann.get("iscrowd", 0), **extra}

    def finalize(self, records: list[dict], info: dict) -> dict:
        return {"info": info, "images": list(self._images(records)), "annotations": list(self._annotations(records)),
                "categories": self.coco_categories()}

    def write_records(self, path: Path, records: Callable[[], Iterator[dict]], info: dict) -> dict | None:
        """The bytes ``write_output(path, finalize(...))`` writes, streamed: two passes over the
        records (images, then annotations), so memory holds one record at a time."""
        if type(self).finalize is not CocoMaskJob.finalize or type(self).write_output is not Job.write_output:
            return super().write_records(path, records, info)

        def dumps(obj) -> str:
            return json.dumps(obj, default=json_default)

        counts, with_masks, last = {"images": 0, "masks": 0}, 0, None
        with atomic_write(path, "w") as fh:
            fh.write('{"info": ' + dumps(info))
            for name, entries in (("images", self._images(records())), ("annotations", self._annotations(records()))):
                fh.write(f', "{name}": [')
                for i, entry in enumerate(entries):
                    fh.write((", " if i else "") + dumps(entry))
                    counts["images" if name == "images" else "masks"] += 1
                    if name == "annotations" and entry["image_id"] != last:  # ids ascend: one change per image
                        with_masks, last = with_masks + 1, entry["image_id"]
                fh.write("]")
            fh.write(', "categories": ' + dumps(self.coco_categories()) + "}")
        return {**counts, "empty": counts["images"] - with_masks}

    def mask_counts(self, final: dict) -> dict:
        return coco_mask_counts(final)


def coco_mask_counts(coco: dict) -> dict:
    """``{"images", "masks", "empty"}`` of a COCO file: its images, annotations and images without any."""
    with_masks = {a["image_id"] for a in coco["annotations"]}
    return {"images": len(coco["images"]), "masks": len(coco["annotations"]),
            "empty": sum(1 for im in coco["images"] if im["id"] not in with_masks)}


def job_class_path(job: Job | type) -> str:
    cls = job if isinstance(job, type) else type(job)
    return f"{cls.__module__}:{cls.__qualname__}"


def default_job_resolver(class_path: str) -> type[Job]:
    """Import a job class named in a shard file; only classes inside seg_suite are allowed."""
    module, _, qualname = class_path.partition(":")
    if not module.startswith("seg_suite.") or not qualname.isidentifier():
        raise UserError(f"shard names job class {class_path!r}, which is not a seg_suite job")
    try:
        cls = getattr(importlib.import_module(module), qualname)
    except (ImportError, AttributeError):
        raise UserError(f"shard names job class {class_path!r}, which this seg_suite does not have") from None
    if not (isinstance(cls, type) and issubclass(cls, Job)):
        raise UserError(f"{class_path!r} is not a seg_suite job class")
    return cls

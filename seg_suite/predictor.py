"""Run a trained MaskFormer-style model over a folder of images and write its outputs as files.

    predictor = PanopticPredictor(cfg, "train/model_final.pth")
    predict_folder(predictor, "images/val", "predict/val", categories)

writes, for every image (named by its path relative to the folder, with ``.png``):

- ``panoptic/<name>.png`` + ``panoptic.json``: COCO panoptic (RGB ids, ``segments_info`` with the
  dataset's category ids and ``isthing``), the format ``seg-suite evaluate --task panoptic`` reads;
- ``semantic/<name>.png``: uint8 argmax of the per-class scores (contiguous class index);
- ``instances.json``: COCO instances (RLE, bbox, area, score; category ids of the dataset).

Test-time input as detectron2's test loader builds it (``ResizeShortestEdge(MIN_SIZE_TEST,
MAX_SIZE_TEST)``, ``INPUT.FORMAT``); outputs come back at the image's own size. Needs detectron2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

from seg_suite.errors import MissingWeightsError
from seg_suite.io.files import atomic_write_json, atomic_write_png, png_name
from seg_suite.io.images import load_image
from seg_suite.io.masks import mask_to_bbox, mask_to_rle
from seg_suite.io.panoptic import id_to_rgb
from seg_suite.io.paths import PathEscapeError, output_path_under


class PanopticPredictor:
    """``cfg`` (frozen, with TEST.PANOPTIC_ON / SEMANTIC_ON / INSTANCE_ON as wanted) + a checkpoint ->
    callable on one HxWx3 uint8 RGB image, returning the model's output dict for it."""

    def __init__(self, cfg, weights: str | os.PathLike):
        from detectron2.data import transforms as T

        from seg_suite.engine.trainer import Trainer
        from seg_suite.modeling import MaskFormerCheckpointer

        if not Path(weights).is_file():
            raise MissingWeightsError(f"model checkpoint not found: {weights} (train the model first)")
        self.model = Trainer.build_model(cfg).eval()
        MaskFormerCheckpointer(self.model).load(str(weights))
        self.resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.bgr = cfg.INPUT.FORMAT == "BGR"

    @torch.inference_mode()
    def __call__(self, image: np.ndarray) -> dict:
        """image: [H, W, 3] uint8 RGB -> {"sem_seg": [C, H, W], "panoptic_seg": (ids [H, W], segments),
        "instances": Instances} (whichever outputs the config turns on)."""
        h, w = image.shape[:2]
        x = image[:, :, ::-1] if self.bgr else image
        x = self.resize.get_transform(x).apply_image(np.ascontiguousarray(x))
        tensor = torch.as_tensor(np.ascontiguousarray(x.transpose(2, 0, 1)))
        return self.model([{"image": tensor, "height": h, "width": w}])[0]


def predict_folder(predictor: PanopticPredictor, image_dir, out_dir, categories: list[dict],
                   progress: bool = True) -> dict:
    """Predict every image under ``image_dir`` and write the files of the module docstring to ``out_dir``.

    ``categories``: the training dataset's categories in contiguous order (contiguous class i is
    ``categories[i]``; its ``id`` is written). Returns counts of what was written.
    """
    from tqdm import tqdm

    from seg_suite.pseudo.inputs import discover_inputs

    out = Path(out_dir)
    ids = [c["id"] for c in categories]
    images, pan_anns, inst_anns = [], [], []
    image_id = 0
    for item in tqdm(discover_inputs(image_dir), desc="predict", unit="img", disable=not progress):
        name = png_name(item.key)
        try:  # a listed image outside the list's folder would write outside out_dir
            sem_path = output_path_under(out / "semantic", name)
            pan_path = output_path_under(out / "panoptic", name)
        except PathEscapeError as err:
            print(f"skipped: {err}", file=sys.stderr)
            continue
        image_id += 1
        image = load_image(item.path)
        h, w = image.shape[:2]
        res = predictor(image)
        images.append({"id": image_id, "file_name": item.key, "height": h, "width": w})
        if "sem_seg" in res:
            # 8-bit maps up to 255 classes, 16-bit beyond (U2Seg's 300 + 27), as seg-suite panoptic writes them
            dtype = torch.uint8 if res["sem_seg"].shape[0] <= 255 else torch.int32
            sem = res["sem_seg"].argmax(0).to(dtype).cpu().numpy()
            atomic_write_png(sem_path, sem if dtype == torch.uint8 else sem.astype(np.uint16))
        if "panoptic_seg" in res:
            pan, segments = res["panoptic_seg"]
            pan = pan.cpu().numpy().astype(np.uint32)
            infos = []
            for s in segments:
                mask = pan == s["id"]
                if mask.any():
                    infos.append({"id": int(s["id"]), "category_id": ids[s["category_id"]], "isthing": int(s["isthing"]),
                                  "iscrowd": 0, "area": int(mask.sum()), "bbox": mask_to_bbox(mask)})
            atomic_write_png(pan_path, id_to_rgb(pan))
            pan_anns.append({"image_id": image_id, "file_name": name, "segments_info": infos})
        if "instances" in res:
            inst = res["instances"].to("cpu")
            for mask, score, cls in zip(inst.pred_masks.numpy() > 0, inst.scores.tolist(), inst.pred_classes.tolist()):
                if mask.any():
                    inst_anns.append({"id": len(inst_anns) + 1, "image_id": image_id, "category_id": ids[cls],
                                      "segmentation": mask_to_rle(mask), "bbox": mask_to_bbox(mask),
                                      "area": int(mask.sum()), "score": float(score), "iscrowd": 0})
    if pan_anns:
        atomic_write_json(out / "panoptic.json", {"images": images, "annotations": pan_anns, "categories": categories})
    atomic_write_json(out / "instances.json", {"images": images, "annotations": inst_anns,
                                               "categories": [c for c in categories if c.get("isthing", 1)]})
    return {"images": len(images), "segments": sum(len(a["segments_info"]) for a in pan_anns),
            "instances": len(inst_anns)}

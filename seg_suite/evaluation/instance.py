"""COCO instance evaluation: mask AP ("segm") and box AP ("bbox") with boxes derived from the masks.

The official Mask2Former writes zero boxes for its instance predictions, which makes box AP
meaningless; here every predicted box is recomputed as the tight box of its predicted mask before
detectron2's ``COCOEvaluator`` (pycocotools ``COCOeval``, ``use_fast_impl=False`` because the
compiled fast evaluator is not available) scores it.
"""

from __future__ import annotations

from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes

from seg_suite.io.masks import masks_to_boxes


class InstanceEvaluator(COCOEvaluator):
    """``COCOEvaluator`` for ``outputs["instances"]`` with ``pred_masks``; boxes from the masks.

    Results: ``{"segm": {"AP", "AP50", "AP75", "APs", "APm", "APl", "AP-<class>"...},
    "bbox": {...}}`` in percent.
    """

    def __init__(self, dataset_name: str, output_dir: str | None = None, distributed: bool = True,
                 tasks=("segm", "bbox"), max_dets_per_image: int | None = None):
        kwargs = {"max_dets_per_image": max_dets_per_image} if max_dets_per_image else {}
        super().__init__(dataset_name, tasks=tasks, distributed=distributed, output_dir=output_dir,
                         use_fast_impl=False, **kwargs)

    def process(self, inputs, outputs):
        for out in outputs:
            inst = out.get("instances")
            if inst is not None and inst.has("pred_masks"):
                inst.pred_boxes = Boxes(masks_to_boxes(inst.pred_masks.detach().cpu() > 0.5).to(inst.pred_masks.device))
        super().process(inputs, outputs)

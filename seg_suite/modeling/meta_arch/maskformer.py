"""``MaskFormer`` meta-architecture (Mask2Former): backbone -> MaskFormerHead -> loss or outputs.

Registered in detectron2's ``META_ARCH_REGISTRY`` under the official name, with the official
constructor arguments (``mask2former/maskformer_model.py``). Training returns the weighted
losses; inference returns, per image, any of "sem_seg" (K, H, W) class scores, "panoptic_seg"
(segment ids, segments_info) and "instances" (detectron2 ``Instances`` with pred_masks,
pred_boxes, scores, pred_classes), at the requested output size ("height"/"width").

Difference from the reference: instance boxes are computed from the predicted masks (the
reference writes zeros), so box AP is meaningful.
"""

from typing import Dict, List, Optional, Set, Tuple

import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone, build_sem_seg_head
from detectron2.modeling.backbone import Backbone
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.memory import retry_if_cuda_oom
from torch import nn
from torch.nn import functional as F

from seg_suite.modeling.criterion import SetCriterion
from seg_suite.modeling.inference import instance_inference, panoptic_inference, semantic_inference
from seg_suite.modeling.matcher import HungarianMatcher


def build_criterion(cfg, num_classes: int) -> SetCriterion:
    """The Mask2Former loss with weights from ``cfg.MODEL.MASK_FORMER``."""
    mf = cfg.MODEL.MASK_FORMER
    matcher = HungarianMatcher(cost_class=mf.CLASS_WEIGHT, cost_mask=mf.MASK_WEIGHT,
                               cost_dice=mf.DICE_WEIGHT, num_points=mf.TRAIN_NUM_POINTS)
    base = {"loss_ce": mf.CLASS_WEIGHT, "loss_mask": mf.MASK_WEIGHT, "loss_dice": mf.DICE_WEIGHT}
    weight_dict = dict(base)
    if mf.DEEP_SUPERVISION:
        # One auxiliary prediction per decoder layer plus the one from the learnable queries.
        for i in range(mf.DEC_LAYERS - 1):
            weight_dict.update({f"{k}_{i}": v for k, v in base.items()})
    return SetCriterion(num_classes, matcher=matcher, weight_dict=weight_dict, eos_coef=mf.NO_OBJECT_WEIGHT,
                        losses=["labels", "masks"], num_points=mf.TRAIN_NUM_POINTS,
                        oversample_ratio=mf.OVERSAMPLE_RATIO,
                        importance_sample_ratio=mf.IMPORTANCE_SAMPLE_RATIO,
                        droploss_iou=mf.DROPLOSS_IOU, debias_momentum=mf.DEBIAS_MOMENTUM,
                        debias_tau=mf.DEBIAS_TAU)


@META_ARCH_REGISTRY.register()
class MaskFormer(nn.Module):
    """Mask-classification segmentation model (see module docstring)."""

    @configurable
    def __init__(self, *, backbone: Backbone, sem_seg_head: nn.Module, criterion: nn.Module,
                 num_queries: int, object_mask_threshold: float, overlap_threshold: float, metadata,
                 size_divisibility: int, sem_seg_postprocess_before_inference: bool,
                 pixel_mean: Tuple[float, ...], pixel_std: Tuple[float, ...], semantic_on: bool,
                 panoptic_on: bool, instance_on: bool, test_topk_per_image: int):
        """
        Args:
            backbone: detectron2 backbone.  sem_seg_head: a ``MaskFormerHead``.
            criterion: a ``SetCriterion`` (its ``weight_dict`` weights the losses).
            num_queries: Q.
            object_mask_threshold, overlap_threshold: panoptic rules (official 0.8, 0.8).
            metadata: dataset metadata; ``thing_dataset_id_to_contiguous_id`` marks thing classes.
            size_divisibility: pad inputs to a multiple of this (< 0: the backbone's).
            sem_seg_postprocess_before_inference: resize mask logits to the output size before
                combining them (required for panoptic/instance).
            pixel_mean, pixel_std: per-channel normalisation (0-255 scale).
            semantic_on, panoptic_on, instance_on: which outputs to produce.
            test_topk_per_image: instances kept per image (official TEST.DETECTIONS_PER_IMAGE 100).
        """
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.criterion = criterion
        self.num_queries = num_queries
        self.overlap_threshold = overlap_threshold
        self.object_mask_threshold = object_mask_threshold
        self.metadata = metadata
        self.size_divisibility = backbone.size_divisibility if size_divisibility < 0 else size_divisibility
        self.sem_seg_postprocess_before_inference = sem_seg_postprocess_before_inference
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.semantic_on = semantic_on
        self.instance_on = instance_on
        self.panoptic_on = panoptic_on
        self.test_topk_per_image = test_topk_per_image
        if not semantic_on and not sem_seg_postprocess_before_inference:
            raise ValueError("sem_seg_postprocess_before_inference must be True unless semantic_on")

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        sem_seg_head = build_sem_seg_head(cfg, backbone.output_shape())
        test = cfg.MODEL.MASK_FORMER.TEST
        train_sets = cfg.DATASETS.TRAIN
        return {
            "backbone": backbone,
            "sem_seg_head": sem_seg_head,
            "criterion": build_criterion(cfg, sem_seg_head.num_classes),
            "num_queries": cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES,
            "object_mask_threshold": test.OBJECT_MASK_THRESHOLD,
            "overlap_threshold": test.OVERLAP_THRESHOLD,
            "metadata": MetadataCatalog.get(train_sets[0]) if len(train_sets) else None,
            "size_divisibility": cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY,
            "sem_seg_postprocess_before_inference": (
                test.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE or test.PANOPTIC_ON or test.INSTANCE_ON),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "semantic_on": test.SEMANTIC_ON,
            "instance_on": test.INSTANCE_ON,
            "panoptic_on": test.PANOPTIC_ON,
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def _thing_classes(self) -> Optional[Set[int]]:
        mapping = getattr(self.metadata, "thing_dataset_id_to_contiguous_id", None) if self.metadata else None
        return None if mapping is None else set(int(v) for v in mapping.values())

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: detectron2 mapper outputs: "image" (3, H, W) in cfg.INPUT.FORMAT order
                and 0-255 scale; in training "instances" with gt_classes and gt_masks; at test time
                optional "height", "width" of the wanted output.
        Returns:
            training: dict of weighted losses.  inference: list of per-image result dicts.
        """
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        images = ImageList.from_tensors(images, self.size_divisibility)
        outputs = self.sem_seg_head(self.backbone(images.tensor))
        if self.training:
            targets = None
            if "instances" in batched_inputs[0]:
                targets = self.prepare_targets([x["instances"].to(self.device) for x in batched_inputs], images)
            losses = self.criterion(outputs, targets)
            weights = self.criterion.weight_dict
            return {k: v * weights[k] for k, v in losses.items() if k in weights}
        return self.inference(outputs, batched_inputs, images)

    def inference(self, outputs: Dict, batched_inputs: List[Dict], images: ImageList) -> List[Dict]:
        mask_pred_results = F.interpolate(outputs["pred_masks"], size=images.tensor.shape[-2:],
                                          mode="bilinear", align_corners=False)
        results = []
        for mask_cls, mask_pred, inputs, image_size in zip(
                outputs["pred_logits"], mask_pred_results, batched_inputs, images.image_sizes):
            height = inputs.get("height", image_size[0])
            width = inputs.get("width", image_size[1])
            result = {}
            if self.sem_seg_postprocess_before_inference:
                mask_pred = retry_if_cuda_oom(sem_seg_postprocess)(mask_pred, image_size, height, width)
                mask_cls = mask_cls.to(mask_pred)
            if self.semantic_on:
                sem = retry_if_cuda_oom(semantic_inference)(mask_cls, mask_pred)
                if not self.sem_seg_postprocess_before_inference:
                    sem = retry_if_cuda_oom(sem_seg_postprocess)(sem, image_size, height, width)
                result["sem_seg"] = sem
            if self.panoptic_on:
                result["panoptic_seg"] = retry_if_cuda_oom(panoptic_inference)(
                    mask_cls, mask_pred, self.sem_seg_head.num_classes, self._thing_classes(),
                    self.object_mask_threshold, self.overlap_threshold)
            if self.instance_on:
                result["instances"] = self._instances(mask_cls, mask_pred)
            results.append(result)
        return results

    def _instances(self, mask_cls: torch.Tensor, mask_pred: torch.Tensor) -> Instances:
        out = instance_inference(mask_cls, mask_pred, self.sem_seg_head.num_classes, self.test_topk_per_image,
                                 self._thing_classes() if self.panoptic_on else None)
        result = Instances(tuple(mask_pred.shape[-2:]))
        result.pred_masks = out["pred_masks"]
        result.pred_boxes = Boxes(out["pred_boxes"])
        result.scores = out["scores"]
        result.pred_classes = out["pred_classes"]
        return result

    def prepare_targets(self, targets: List[Instances], images: ImageList) -> List[Dict]:
        """Per image, "labels" (T,) and "masks" (T, H_pad, W_pad) zero-padded to the batch size."""
        h_pad, w_pad = images.tensor.shape[-2:]
        prepared = []
        for inst in targets:
            masks = inst.gt_masks
            masks = getattr(masks, "tensor", masks)  # BitMasks or a plain tensor
            padded = torch.zeros((masks.shape[0], h_pad, w_pad), dtype=masks.dtype, device=masks.device)
            padded[:, : masks.shape[1], : masks.shape[2]] = masks
            prepared.append({"labels": inst.gt_classes, "masks": padded})
        return prepared

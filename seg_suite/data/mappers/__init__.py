"""Training dataset mappers, selected by ``INPUT.DATASET_MAPPER_NAME`` (the official names).

Every mapper returns what the MaskFormer meta-architecture reads: ``image`` (3xHxW uint8) and
``instances`` with ``gt_classes`` (N,) int64, ``gt_masks`` (N, H, W) bool tensor and ``gt_boxes``.
"""

from seg_suite.data.mappers.copy_paste import copy_paste
from seg_suite.data.mappers.instance_lsj import InstanceLSJDatasetMapper
from seg_suite.data.mappers.panoptic_lsj import PanopticLSJDatasetMapper
from seg_suite.data.mappers.semantic import SemanticDatasetMapper

from seg_suite.errors import UserError

MAPPERS = {
    "coco_instance_lsj": InstanceLSJDatasetMapper,
    "coco_panoptic_lsj": PanopticLSJDatasetMapper,
    "mask_former_semantic": SemanticDatasetMapper,
}


def build_train_mapper(cfg):
    """The mapper named by ``cfg.INPUT.DATASET_MAPPER_NAME``, built for training."""
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in MAPPERS:
        raise UserError(f"INPUT.DATASET_MAPPER_NAME {name!r} is not supported; choose one of {sorted(MAPPERS)}")
    if cfg.INPUT.COPY_PASTE.ENABLED and name != "coco_instance_lsj":
        raise UserError(f"INPUT.COPY_PASTE works with the coco_instance_lsj mapper only, not {name!r}")
    return MAPPERS[name](cfg, True)


__all__ = ["InstanceLSJDatasetMapper", "MAPPERS", "PanopticLSJDatasetMapper", "SemanticDatasetMapper",
           "build_train_mapper", "copy_paste"]

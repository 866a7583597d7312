"""Config keys of the data and training side, on top of :func:`seg_suite.config.add_seg_suite_config`.

- ``INPUT.COPY_PASTE.ENABLED`` / ``PROB``: Simple Copy-Paste in the instance mapper (Ghiasi et al.
  2021). Off by default, as in the official Mask2Former configs; when on, ``PROB`` is the chance
  that an image receives objects from another one (1.0: every image, the paper's setting).
- ``DATASETS.PSEUDO_COCO``: ``[[name, json_file, image_root], ...]`` COCO (pseudo-)label files
  registered before training (:func:`seg_suite.data.datasets.register_from_cfg`).
- ``DATASETS.PSEUDO_PANOPTIC``: ``[[name, root, split], ...]`` panoptic pseudo-label roots
  (``seg-suite panoptic --output ROOT --split SPLIT``) registered with the categories of
  ``ROOT/annotations/panoptic_SPLIT.json`` (:func:`seg_suite.data.datasets.register_pseudo_panoptic`,
  applied by the same call as ``PSEUDO_COCO``); set ``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` to K + S.
- ``DATASETS.SYNTHETIC_ROOT``: folder of a synthetic set (``seg-suite make-synthetic``) to register
  as ``synthetic_*``; "" keeps ``$DETECTRON2_DATASETS/synthetic``.
"""

from detectron2.config import CfgNode as CN


def add_training_config(cfg: CN) -> None:
    """Add (in place) the keys listed in the module docstring."""
    cfg.INPUT.COPY_PASTE = CN()
    cfg.INPUT.COPY_PASTE.ENABLED = False
    cfg.INPUT.COPY_PASTE.PROB = 1.0
    cfg.DATASETS.PSEUDO_COCO = []
    cfg.DATASETS.PSEUDO_PANOPTIC = []
    cfg.DATASETS.SYNTHETIC_ROOT = ""

"""seg_suite: unsupervised image and video segmentation.

Pseudo-masks without labels (MaskCut, clustering, motion grouping, SAM), Mask2Former-style
training on them through detectron2, and honest evaluation. See README.md.
"""

__version__ = "0.1.0"

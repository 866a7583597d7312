"""Evaluation: class-agnostic mask AP, COCO instance AP, PQ, mIoU, DAVIS J&F.

Import-light on purpose: nothing here imports detectron2 at package level. Import the
submodule you need (``seg_suite.evaluation.class_agnostic`` needs only pycocotools;
``instance``/``panoptic``/``sem_seg`` evaluators may use detectron2).
"""

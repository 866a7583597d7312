"""Datasets: synthetic data (import-light, no detectron2) and detectron2 registration,
mappers and augmentation (in submodules that import detectron2 themselves)."""

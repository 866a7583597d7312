"""Cluster -> class mappers fitted on a confusion matrix ``conf[K clusters, C classes]``.

Each mapper follows the scikit-learn shape: ``fit(conf)`` returns the mapper with ``mapping_``
(``[K]`` class index per cluster, ``UNMAPPED`` = -1) set, and ``transform(labels)`` turns cluster
indices into class indices. The protocols are described in :mod:`seg_suite.evaluation.unsupervised`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from seg_suite.errors import UserError

PROTOCOLS = ("hungarian", "majority")
UNMAPPED = -1


def remap(labels: np.ndarray, mapping: np.ndarray, fill: int = UNMAPPED) -> np.ndarray:
    """Cluster indices -> class indices; labels outside [0, K) and unmapped clusters get ``fill``."""
    labels = np.asarray(labels).astype(np.int64)
    out = np.full(labels.shape, fill, np.int64)
    ok = (labels >= 0) & (labels < len(mapping))
    out[ok] = mapping[labels[ok]]
    out[out == UNMAPPED] = fill
    return out


class _Mapper(ABC):
    """fit(confusion [K clusters, C classes]) sets ``mapping_`` ([K] class index or UNMAPPED);
    transform(labels) maps cluster labels through it."""

    mapping_: np.ndarray

    def fit(self, conf: np.ndarray) -> "_Mapper":
        self.mapping_ = self._fit(conf)
        return self

    def transform(self, labels: np.ndarray, fill: int = UNMAPPED) -> np.ndarray:
        return remap(labels, self.mapping_, fill)

    @abstractmethod
    def _fit(self, conf: np.ndarray) -> np.ndarray:
        """The mapping fitted on ``conf``."""


class HungarianMapper(_Mapper):
    """1:1 assignment maximising the matched count; ``extra`` says what becomes of the clusters
    left over when there are more clusters than classes: "assign" (further rounds of assignment
    until every cluster with data has a class) or "none" (they stay unmapped)."""

    def __init__(self, extra: str = "assign"):
        if extra not in ("assign", "none"):
            raise ValueError(f"extra must be 'assign' or 'none', got {extra!r}")
        self.extra = extra

    def _fit(self, conf: np.ndarray) -> np.ndarray:
        from scipy.optimize import linear_sum_assignment

        conf = np.asarray(conf, dtype=np.float64)
        mapping = np.full(conf.shape[0], UNMAPPED, np.int64)
        rows, cols = linear_sum_assignment(conf, maximize=True)
        mapping[rows] = cols
        if self.extra == "assign":
            left = np.flatnonzero((mapping == UNMAPPED) & (conf.sum(1) > 0))
            while len(left):
                r, c = linear_sum_assignment(conf[left], maximize=True)
                mapping[left[r]] = c
                left = np.delete(left, r)
        mapping[conf.sum(1) == 0] = UNMAPPED  # no data in the fit split: nothing to map it by
        return mapping


class MajorityMapper(_Mapper):
    """Many-to-one: each cluster takes the class it overlaps most."""

    def _fit(self, conf: np.ndarray) -> np.ndarray:
        conf = np.asarray(conf)
        mapping = conf.argmax(1).astype(np.int64)
        mapping[conf.sum(1) == 0] = UNMAPPED
        return mapping


def make_mapper(protocol: str = "hungarian", extra: str = "assign") -> _Mapper:
    if protocol == "hungarian":
        return HungarianMapper(extra)
    if protocol == "majority":
        return MajorityMapper()
    raise UserError(f"unknown mapping protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")


def hungarian_mapping(conf: np.ndarray, extra: str = "assign") -> np.ndarray:
    """[K, C] counts -> [K] class index per cluster (``UNMAPPED`` = -1), 1:1 first."""
    return HungarianMapper(extra).fit(conf).mapping_


def majority_mapping(conf: np.ndarray) -> np.ndarray:
    """[K, C] counts -> [K] the class each cluster overlaps most (``UNMAPPED`` without data)."""
    return MajorityMapper().fit(conf).mapping_


def fit_mapping(conf: np.ndarray, protocol: str = "hungarian", extra: str = "assign") -> np.ndarray:
    return make_mapper(protocol, extra).fit(conf).mapping_

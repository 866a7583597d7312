"""U2Seg's panoptic merge: one image's instances and stuff map -> segment ids and segments_info.

The merge rules are U2Seg's ``datasets/prepare_ours/generate_pseudo_panoptic.py``:

1. instances are painted in DESCENDING area, so a smaller one lies on top of a larger one it
   overlaps; an instance left with no visible pixel is dropped. (U2Seg sorts by box area; we sort
   by mask area, the brief's rule, which differs only for odd shapes.)
2. each stuff cluster then fills the still unoccupied pixels it covers, but only when at most
   ``max_overlap`` (70%) of ITS pixels fall on instances; otherwise it is skipped (those pixels
   stay VOID).
3. category ids: things 1..K (the instance clusters), stuff K+1..K+S (stuff cluster s -> K+1+s),
   with ``isthing`` set.

Pure array code: no files, no runner.
"""

from __future__ import annotations

import numpy as np

from seg_suite.io.masks import mask_to_bbox

MAX_STUFF_OVERLAP = 0.7  # U2Seg generate_pseudo_panoptic.py: skip a stuff cluster > 70% under instances
STUFF_IGNORE = 255  # value of unlabelled pixels in stuff maps (seg-suite semantic-pseudo writes 0..S-1, 255)


def assemble_panoptic(instances, stuff: np.ndarray | None, num_things: int, num_stuff: int = 0,
                      max_overlap: float = MAX_STUFF_OVERLAP, shape: tuple[int, int] | None = None):
    """Merge one image's instances and stuff map.

    Args:
        instances: list of ``(mask bool [H, W], category_id in 1..K)``.
        stuff: [H, W] stuff-cluster map (0..S-1, ``STUFF_IGNORE`` unlabelled), or None.
        num_things: K. num_stuff: S (stuff cluster s becomes category K + 1 + s).
        shape: (H, W) when there are neither instances nor a stuff map.
    Returns:
        ids: [H, W] uint32 segment ids (0 = VOID), segments: ``segments_info`` in id order, each
        ``{"id", "category_id", "isthing", "iscrowd", "area", "bbox"}``; thing segments also carry
        ``"source"``, the index of their instance in ``instances``.
    """
    if shape is None:
        shape = stuff.shape if stuff is not None else instances[0][0].shape
    ids = np.zeros(shape, np.uint32)
    order = sorted(range(len(instances)), key=lambda i: -int(np.count_nonzero(instances[i][0])))  # stable
    painted = []
    for n, i in enumerate(order, start=1):
        mask, cat = instances[i]
        if mask.shape != tuple(shape):
            raise ValueError(f"instance mask of shape {mask.shape}, image {tuple(shape)}")
        if not 1 <= int(cat) <= num_things:
            raise ValueError(f"instance category {cat} outside the thing ids 1..{num_things}")
        ids[mask] = n
        painted.append((n, i, int(cat)))
    segments = []
    next_id = 1
    final = np.zeros_like(ids)
    for n, i, cat in painted:  # renumber the visible ones 1, 2, ... in painting order
        visible = ids == n
        if visible.any():
            final[visible] = next_id
            segments.append({"id": next_id, "category_id": cat, "isthing": 1, "iscrowd": 0, "source": i})
            next_id += 1
    if stuff is not None:
        if stuff.shape != tuple(shape):
            raise ValueError(f"stuff map of shape {stuff.shape}, image {tuple(shape)}")
        occupied = final > 0
        for s in range(num_stuff):
            region = stuff == s
            total = int(np.count_nonzero(region))
            if total == 0:
                continue
            free = region & ~occupied
            if not free.any() or (total - np.count_nonzero(free)) / total > max_overlap:
                continue
            final[free] = next_id
            segments.append({"id": next_id, "category_id": num_things + 1 + s, "isthing": 0, "iscrowd": 0})
            next_id += 1
    for seg in segments:
        m = final == seg["id"]
        seg["area"] = int(np.count_nonzero(m))
        seg["bbox"] = mask_to_bbox(m)
    return final, segments


def panoptic_categories(num_things: int, num_stuff: int, seed: int = 0) -> list[dict]:
    """Things 1..K (``cluster_k``) then stuff K+1..K+S (``stuff_s``), with isthing and a display colour."""
    rng = np.random.default_rng(seed)
    colors = rng.integers(40, 256, size=(num_things + num_stuff, 3)).tolist()
    cats = [{"id": k + 1, "name": f"cluster_{k + 1}", "supercategory": "thing", "isthing": 1, "color": colors[k]}
            for k in range(num_things)]
    cats += [{"id": num_things + 1 + s, "name": f"stuff_{s + 1}", "supercategory": "stuff", "isthing": 0,
              "color": colors[num_things + s]} for s in range(num_stuff)]
    return cats


def semantic_from_panoptic(ids: np.ndarray, segments: list[dict], num_categories: int) -> np.ndarray:
    """detectron2 panoptic-semantic map: category id c -> contiguous c - 1 (ids are 1..K+S), void 255.

    uint8 when there are at most 255 categories, else uint16 with void 65535.
    """
    dtype, void = (np.uint8, 255) if num_categories <= 255 else (np.uint16, 65535)
    lut = np.full(int(ids.max(initial=0)) + 1, void, np.int64)
    for seg in segments:
        lut[seg["id"]] = seg["category_id"] - 1
    return lut[ids].astype(dtype)

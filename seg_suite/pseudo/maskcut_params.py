"""MaskCut's settings, apart from the algorithm so that they can be read (by the command line's
flags, for one) without importing torch. :mod:`seg_suite.pseudo.maskcut` uses them.
"""

from __future__ import annotations

from dataclasses import dataclass

from seg_suite.params import Params, at_least, between, one_of, param

# The eigensolvers of seg_suite.pseudo.ncut (ncut.SOLVERS; a test keeps the two equal).
SOLVERS = ("auto", "eigsh", "lobpcg", "dense")


@dataclass(frozen=True)
class MaskCutParams(Params):
    """MaskCut settings. Defaults are the command CutLER's README gives for ImageNet
    pseudo-masks (``maskcut.py --vit-arch base --patch-size 8 --tau 0.15 --fixed_size 480
    --N 3``, key features as the script's ``--vit-feat k`` default); ``crf=True`` because
    CutLER's ``maskcut.py`` always applies ``crf.densecrf``."""

    fixed_size: int = param(480, "images are resized to this square side before feature extraction",
                            "CutLER's README", at_least(1), metavar="S")
    tau: float = param(0.15, "affinity binarisation threshold", "CutLER's README", between(0, 1, open=True),
                       metavar="T")
    num_masks: int = param(3, "N, the most masks per image", "CutLER's README", at_least(1), metavar="N")
    facet: str = param("k", "which last-block features to cut (k = attention keys)",
                       "CutLER maskcut.py's --vit-feat", one_of("k", "q", "v", "token"))
    crf: bool = param(True, "dense-CRF refinement of each mask", "as CutLER's maskcut.py always applies it")
    solver: str = param("auto", "eigensolver: auto = Lanczos (eigsh) on CPU, batched LOBPCG on CUDA; "
                                "dense = the reference's generalized eigh, slow",
                        "seg_suite's choice; dense is the reference solver", one_of(*SOLVERS))
    # Drop rules of maskcut_forward and its caller (CutLER maskcut/maskcut.py).
    max_iou_with_previous: float = param(0.5, "a cut overlapping an earlier mask more than this is dropped",
                                         "CutLER maskcut.py", between(0, 1))
    min_patch_fraction: float = param(0.01, "a cut covering at most this fraction of the patches is dropped",
                                      "CutLER maskcut.py", between(0, 1))
    min_crf_iou: float = param(0.5, "a mask the CRF changes to below this IoU is dropped", "CutLER maskcut.py",
                               between(0, 1))

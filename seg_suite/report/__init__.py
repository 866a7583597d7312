"""Static HTML reports of seg_suite's outputs: ``DIR/index.html`` and its assets, one folder that
opens from disk with no server and no internet.

    build_report(inputs, output, images=None, gt=None, max_images=200) -> Path of index.html

What a report shows depends on what the inputs are (found by :func:`seg_suite.report.detect.detect`):
a COCO mask file (pseudo-labels, predictions, clusters), a ``seg-suite evaluate`` result, video
motion masks (with DAVIS ground truth), a detectron2 training folder, or a recipe run folder.
"""

from seg_suite.report.build import build_report

__all__ = ["build_report"]

"""``build_report``: detect each input, build its page(s), and put the finished folder in place.

The report is built in a temporary folder beside ``output`` and moved there when complete, so an
interrupted build leaves no half-written report. An existing ``output`` is replaced only when it
is empty or an earlier report (it holds the :data:`MARKER` file).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from seg_suite.errors import UserError
from seg_suite.io.files import check_writable_dir
from seg_suite.report.assets import Assets
from seg_suite.report.detect import detect
from seg_suite.report.page import Page, Section, Table, cell, write_page
from seg_suite.report.selection import DEFAULT_MAX_IMAGES

MARKER = ".seg_suite_report"  # marks a folder as a report, which a later build may replace


def build_report(inputs, output, *, images=None, gt=None, max_images: int = DEFAULT_MAX_IMAGES) -> Path:
    """Write the report of ``inputs`` (one path or a list) to the folder ``output``; returns its index.html.

    ``images``: the root the file names of a COCO file (or the frames of video masks) are relative to.
    ``gt``: ground truth, a COCO file for mask files or a DAVIS annotation root for video masks.
    ``max_images``: most images (or frames per sequence view) shown; chosen deterministically.
    """
    paths = [Path(p) for p in ([inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs))]
    if not paths:
        raise UserError("no input to report on")
    if max_images < 1:
        raise UserError(f"--max-images must be at least 1, got {max_images}")
    output = Path(output).expanduser()
    _check_output(output)
    detected = [(p, *detect(p)) for p in paths]
    check_writable_dir(output.absolute().parent, "folder of --output")
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.absolute().parent))
    try:
        options = {"images": images, "gt": gt, "max_images": max_images}
        if len(detected) == 1:
            path, kind, content = detected[0]
            write_page(page_for(kind, content, path, tmp, options), tmp / "index.html")
        else:
            front = Page("seg_suite report", intro=[f"{len(detected)} inputs; each has its own page."])
            rows = []
            for i, (path, kind, content) in enumerate(detected, 1):
                folder = tmp / f"part_{i:02d}"
                folder.mkdir()
                write_page(page_for(kind, content, path, folder, options, parent="../index.html"),
                           folder / "index.html")
                rows.append([cell(str(path)), cell(kind), cell("open", href=f"part_{i:02d}/index.html")])
            front.add(Section("inputs", "Inputs", table=Table(["input", "kind", "report"], rows)))
            write_page(front, tmp / "index.html")
        (tmp / MARKER).write_text("seg_suite report\n")
        os.chmod(tmp, 0o777 & ~_umask())
        _replace(tmp, output)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return output / "index.html"


def page_for(kind: str, content, path: Path, folder: Path, options: dict, parent: str | None = None) -> Page:
    """The page of one detected input, its assets written under ``folder``."""
    assets = Assets(folder)
    if kind == "coco":
        from seg_suite.io.coco import check_coco, read_coco
        from seg_suite.pseudo.shards import sidecar_path
        from seg_suite.report.coco_page import coco_page

        gt = read_coco(options["gt"], "ground-truth file") if options.get("gt") else None
        page = coco_page(check_coco(content, path), str(path), assets, images_root=options.get("images"), gt=gt,
                         max_images=options["max_images"], failures=sidecar_path(path, "failures"))
    elif kind == "results":
        from seg_suite.io.coco import check_results, read_coco
        from seg_suite.report.coco_page import coco_page, results_as_coco

        if not options.get("gt"):
            raise UserError(f"{path} is a list of results without image file names; pass --gt with the ground-truth "
                            f"file they were predicted on")
        gt = read_coco(options["gt"], "ground-truth file")
        coco = results_as_coco(check_results(content, path, {im["id"] for im in gt["images"]}), gt)
        page = coco_page(coco, str(path), assets, images_root=options.get("images"), gt=gt,
                         max_images=options["max_images"])
    elif kind == "evaluation":
        from seg_suite.report.evaluation_page import evaluation_page

        page = evaluation_page(content, str(path), assets)
    elif kind in ("video", "video_eval"):
        from seg_suite.report.video_page import video_page

        page = video_page(kind, content, path, assets, frames_root=options.get("images"), gt_root=options.get("gt"),
                          max_images=options["max_images"])
    elif kind == "training":
        from seg_suite.report.training_page import training_page

        page = training_page(content, assets)
    elif kind == "recipe":
        from seg_suite.report.recipe_page import recipe_page

        page = recipe_page(path, folder, options)
    else:  # pragma: no cover - detect() returns only the kinds above
        raise AssertionError(kind)
    page.parent = parent
    return page


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_output(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file; give a folder for the report")
    if output.is_dir() and any(output.iterdir()) and not (output / MARKER).is_file():
        raise UserError(f"--output {output} is a folder that holds other files; give a new or empty folder "
                        f"(an earlier report there is replaced)")


def _replace(new: Path, output: Path) -> None:
    """Move the finished report ``new`` to ``output``, replacing an earlier report there."""
    old = None
    if output.exists():
        old = output.with_name(f".{output.name}.old-{os.getpid()}")
        output.rename(old)
    new.rename(output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

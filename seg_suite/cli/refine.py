"""``seg-suite refine``: sharpen the masks of a COCO pseudo-label file with SAM."""

from __future__ import annotations

from seg_suite.cli import _common, _sam
from seg_suite.cli._params import add_params, params_from_args


COMMAND = "refine"
HELP = "refine the masks of a COCO pseudo-label file (MaskCut, motion, self-training) with SAM"


def register(subparsers) -> None:
    from seg_suite.pseudo.sam_refine import RefineParams

    parser = _common.add_command(
        subparsers, COMMAND, run,
        help=HELP,
        description=(
            "For every mask in --input, prompt SAM with the mask's box, positive points inside it and "
            "negative points on a ring just outside it (all masks of an image in one batch, one image "
            "embedding per image). Of SAM's four outputs the one with the highest IoU to the coarse mask is "
            "chosen; it replaces the coarse mask when that IoU is at least --iou-thresh, otherwise the coarse "
            "mask is kept. The output keeps the input's ids, categories and fields, and adds per annotation "
            "refined_by (sam|coarse), refine_iou and sam_score; info.refined counts both. Images that cannot "
            "be read, whose file_name leaves --images, or whose masks do not fit the image are listed in "
            "OUT.failures.jsonl with the reason and left out. The point-sampling defaults are "
            "seg_suite's own (there is no published recipe); the 0.5 IoU rule keeps SAM's mask only where it agrees with the coarse one."
        ),
        input=("P.json", "the COCO pseudo-label file to refine (RLE or polygon segmentations), e.g. the output of "
                         "`seg-suite maskcut`", "--input-json"),
        images=("ROOT", "folder the input's file_name entries are relative to (the --input of the run that made it)"),
        output=("OUT.json", "the refined file, written atomically when the run is complete. Beside it: "
                            "OUT.failures.jsonl, OUT.journal.jsonl while running (for --resume), OUT.log.jsonl "
                            "(timings)"),
    )
    _sam.add_sam_args(parser)
    ref = parser.add_argument_group("prompts and keep rule (seg_suite.pseudo.sam_refine.RefineParams)")
    add_params(ref, RefineParams, "num_positive", "num_negative", "ring_inner", "ring_outer", "iou_thresh")
    _sam.add_batch_arg(ref, "--prompts-per-batch", "masks")
    _common.add_run_args(parser)


def run(args) -> int:
    from seg_suite.pseudo.runner import run_job
    from seg_suite.pseudo.sam_jobs import SamRefineJob
    from seg_suite.pseudo.sam_refine import RefineParams

    prompts_per_batch = _sam.batch_from_args(args, "--prompts-per-batch")
    params = params_from_args(args, RefineParams)
    kwargs = _common.run_kwargs(args)
    _common.check_output(args.output)
    job = SamRefineJob(args.input, params, prompts_per_batch=prompts_per_batch, **_sam.sam_kwargs(args))
    items = job.items(args.images)
    job.load()
    summary = run_job(job, items, args.output, **kwargs)
    return _common.finish(summary, args)

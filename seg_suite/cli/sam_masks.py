"""``seg-suite sam-masks``: COCO pseudo-masks for a folder of images from SAM's automatic mask generator."""

from __future__ import annotations

from seg_suite.cli import _common, _sam
from seg_suite.cli._params import add_params, params_from_args


COMMAND = "sam-masks"
HELP = "Segment Anything automatic masks (COCO JSON) for a folder of images"


def register(subparsers) -> None:
    from dataclasses import fields

    from seg_suite.pseudo.sam import SamGeneratorParams

    parser = _common.add_command(
        subparsers, COMMAND, run,
        help=HELP,
        description=(
            "Prompt SAM with a grid of points on every image (segment-anything's "
            "SamAutomaticMaskGenerator), filter by predicted IoU and stability, remove duplicates by box "
            "NMS, and write one COCO instance file: category {\"id\": 1, \"name\": \"object\"}, RLE masks "
            "with bbox and area, score = SAM's predicted IoU clipped to [0, 1] (raw predicted_iou and "
            "stability_score kept beside it), true image sizes, and the resolved parameters, checkpoint "
            "digest and library versions in info. Bad inputs are listed in OUT.failures.jsonl and the run "
            "goes on. Generator defaults are segment-anything's (automatic_mask_generator.py), chosen by "
            "its authors for ViT-H."
        ),
    )
    _common.add_input_output_args(parser)
    _sam.add_sam_args(parser)
    gen = parser.add_argument_group("generator (seg_suite.pseudo.sam.SamGeneratorParams)")
    add_params(gen, SamGeneratorParams, *(f.name for f in fields(SamGeneratorParams)))
    _sam.add_batch_arg(gen, "--points-per-batch", "point prompts")
    _common.add_run_args(parser, batch_source="one image per call, as segment-anything's "
                                                "SamAutomaticMaskGenerator.generate")


def run(args) -> int:
    from seg_suite.pseudo.runner import run_job
    from seg_suite.pseudo.sam import SamGeneratorParams
    from seg_suite.pseudo.sam_jobs import SamMasksJob

    points_per_batch = _sam.batch_from_args(args, "--points-per-batch")
    params = params_from_args(args, SamGeneratorParams)
    kwargs = _common.run_kwargs(args)
    items = _common.select_items(args)
    _common.check_output(args.output)
    job = SamMasksJob(params, points_per_batch=points_per_batch, **_sam.sam_kwargs(args)).load()
    summary = run_job(job, items, args.output, **kwargs)
    return _common.finish(summary, args)

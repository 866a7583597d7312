"""``seg-suite maskcut``: COCO pseudo-masks for a folder of unlabeled images (MaskCut, as CutLER)."""

from __future__ import annotations

from seg_suite.cli import _common
from seg_suite.cli._params import add_params, params_from_args


COMMAND = "maskcut"
HELP = "MaskCut pseudo-masks (COCO JSON) for a folder of images"


def register(subparsers) -> None:
    from seg_suite.features.backbones import DEFAULT_BACKBONE
    from seg_suite.pseudo.maskcut_params import MaskCutParams

    parser = _common.add_command(
        subparsers, COMMAND, run,
        help=HELP,
        description=(
            "Generate class-agnostic pseudo-masks with MaskCut (normalized cuts on self-supervised ViT "
            "features, as CutLER's maskcut/maskcut.py) and write one COCO instance file: category "
            '{"id": 1, "name": "object"}, RLE masks with bbox, area and score, true image sizes, and the '
            "resolved parameters and library versions in info. Bad inputs are listed in "
            "OUT.failures.jsonl and the run goes on. Defaults are CutLER's README command."
        ),
    )
    _common.add_input_output_args(parser)
    _common.add_backbone_args(parser, DEFAULT_BACKBONE, "as CutLER's README", output="masks")
    cut = parser.add_argument_group("MaskCut (seg_suite.pseudo.maskcut.MaskCutParams)")
    add_params(cut, MaskCutParams, "tau", "num_masks", "fixed_size", "facet", "crf", "solver")
    _common.add_max_pixels_arg(parser)
    _common.add_run_args(parser, batch_source="one at a time, as the reference MaskCut runs")


def run(args) -> int:
    from pathlib import Path

    from seg_suite.pseudo.maskcut import MaskCutParams
    from seg_suite.pseudo.maskcut_job import MaskCutJob
    from seg_suite.pseudo.runner import run_job

    params = params_from_args(args, MaskCutParams)
    max_pixels = _common.max_pixels(args)
    kwargs = _common.run_kwargs(args)
    items = _common.select_items(args)
    _common.check_output(args.output)
    job = MaskCutJob(params, backbone=args.backbone, weights=args.weights, device=_common.device_from_args(args),
                     max_pixels=max_pixels, random_init=args.random_init, precision=args.precision).load()
    summary = run_job(job, items, args.output, **kwargs)
    code = _common.finish(summary, args)
    if summary.num_failed < summary.num_items and summary.output == Path(args.output):
        _common.print_report_hint(args.output, images=_common.input_root(args.input))
    return code

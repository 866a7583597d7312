"""``seg-suite maskcut``: COCO pseudo-masks for a folder of unlabeled images (MaskCut, as CutLER)."""

from __future__ import annotations

import argparse

from seg_suite.cli import _common


def register(subparsers) -> None:
    from seg_suite.features.backbones import DEFAULT_BACKBONE
    from seg_suite.io.images import DEFAULT_MAX_PIXELS
    from seg_suite.pseudo.maskcut import MaskCutParams

    d = MaskCutParams()
    parser = subparsers.add_parser(
        "maskcut",
        help="MaskCut pseudo-masks (COCO JSON) for a folder of images",
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
    cut = parser.add_argument_group("MaskCut (defaults: CutLER README / maskcut.py)")
    cut.add_argument("--tau", type=float, default=d.tau, help="affinity binarisation threshold (default: %(default)s)")
    cut.add_argument("--num-masks", type=int, default=d.num_masks, help="N, the most masks per image (default: %(default)s)")
    cut.add_argument("--fixed-size", type=int, default=d.fixed_size,
                     help="images are resized to this square side before feature extraction (default: %(default)s)")
    cut.add_argument("--facet", default=d.facet, choices=("k", "q", "v", "token"),
                     help="which last-block features to cut (default: %(default)s = attention keys, CutLER's --vit-feat)")
    cut.add_argument("--crf", action=argparse.BooleanOptionalAction, default=d.crf,
                     help="dense-CRF refinement of each mask (default: on, as CutLER always applies it)")
    cut.add_argument("--solver", default=d.solver, choices=("auto", "eigsh", "lobpcg", "dense"),
                     help="eigensolver: auto = Lanczos (eigsh) on CPU, batched LOBPCG on CUDA; "
                          "dense = the reference's generalized eigh, slow (default: %(default)s)")
    parser.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
        help="larger images are refused and listed in the failures (default: %(default)s, "
             "seg_suite.io.images.DEFAULT_MAX_PIXELS)",
    )
    _common.add_run_args(parser, batch_source="one at a time, as the reference MaskCut runs")
    parser.set_defaults(func=run)


def run(args) -> int:
    from seg_suite.errors import UserError
    from seg_suite.pseudo.maskcut import MaskCutParams
    from seg_suite.pseudo.maskcut_job import MaskCutJob
    from seg_suite.pseudo.runner import run_job

    if args.tau <= 0 or args.tau >= 1 or args.num_masks < 1 or args.fixed_size < 1:
        raise UserError("need 0 < --tau < 1, --num-masks >= 1 and --fixed-size >= 1")
    if args.max_pixels < 1:
        raise UserError("--max-pixels must be positive")
    kwargs = _common.run_kwargs(args)
    items = _common.select_items(args)
    _common.check_output(args.output)
    params = MaskCutParams(fixed_size=args.fixed_size, tau=args.tau, num_masks=args.num_masks,
                           facet=args.facet, crf=args.crf, solver=args.solver)
    job = MaskCutJob(params, backbone=args.backbone, weights=args.weights, device=_common.device_from_args(args),
                     max_pixels=args.max_pixels, random_init=args.random_init).load()
    summary = run_job(job, items, args.output, **kwargs)
    return _common.finish(summary, args)

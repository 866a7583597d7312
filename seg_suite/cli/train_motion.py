"""``seg-suite train-motion``: train the RCF-style segmenter on unlabeled videos."""

from __future__ import annotations

from seg_suite.cli import _common
from seg_suite.cli._params import add_params, params_from_args


COMMAND = "train-motion"
HELP = "train an RCF-style motion segmenter on unlabeled videos"


def register(subparsers) -> None:
    from seg_suite.pseudo.motion.rcf_config import RCFConfig

    parser = _common.add_command(
        subparsers, COMMAND, run,
        help=HELP,
        description=(
            "Relaxed common fate (RCF, github.com/TonyLianLong/RCF-UnsupVideoSeg): a ResNet predicts K "
            "soft masks; each mask's flow is fitted by one affine motion plus a tanh-bounded residual, and "
            "the L1 error to the optical flow (both directions) trains the masks. The object channel is "
            "then chosen without labels by motion-appearance alignment (IMAS), and an optional appearance "
            "stage distils dense-CRF refinements of an EMA teacher. Writes a checkpoint; export its masks "
            "with `seg-suite motion-masks --method rcf --checkpoint CKPT`. Defaults are RCF's configs "
            "(configs/rcf/rcf_stage1.yaml, rcf_stage2.1.yaml) except the sizes and step counts, which "
            "are small so that CPU training takes minutes."
        ),
        input=("VIDEO|DIR", "training videos: same forms as motion-masks --input (DAVIS root, synthetic root, "
                            "folder of frame folders or video files)"),
        output=("CKPT.pth", "checkpoint to write (atomically; .pth, .pt, .bin or .ckpt); a sibling CKPT.json holds "
                            "the config and losses"),
    )
    add_params(parser, RCFConfig, "backbone")
    parser.add_argument("--weights", default=None, metavar="PATH",
                        help="local torchvision ResNet state dict to start from, checked before any flow is "
                             "computed (default: random init; nothing is downloaded)")
    add_params(parser, RCFConfig, "num_masks", "size", "steps", "stage2_steps", "batch_size", "lr", "gaps",
               "flow_preset")
    parser.add_argument("--flow-cache", default=None, metavar="DIR", help="reuse/cache flows here (default: none)")
    _common.add_device_arg(parser)
    add_params(parser, RCFConfig, "seed")


def run(args) -> int:
    import sys
    from pathlib import Path

    from seg_suite.devices import resolve_device
    from seg_suite.errors import UserError
    from seg_suite.io.checkpoints import TORCH_SUFFIXES
    from seg_suite.io.files import atomic_write_json
    from seg_suite.pseudo.motion.rcf_model import RCFNet
    from seg_suite.pseudo.motion.rcf_train import RCFConfig, describe, load_pairs, save_checkpoint, train_rcf
    from seg_suite.pseudo.motion.video import discover_sequences

    cfg = params_from_args(args, RCFConfig)
    resolve_device(args.device)
    # motion-masks --checkpoint reads the file by its suffix, and CKPT.json sits beside it.
    if Path(args.output).suffix.lower() not in TORCH_SUFFIXES:
        raise UserError(f"--output must end in {', '.join(TORCH_SUFFIXES)} (got {args.output}), so that "
                        f"`seg-suite motion-masks --checkpoint` can read it")
    _common.check_output(args.output)
    seqs = discover_sequences(args.input)
    if args.weights is not None:  # a wrong or unsafe file stops here, before minutes of flow
        RCFNet(cfg.backbone, cfg.num_masks, cfg.head_channels, args.weights)
    data = load_pairs(seqs, cfg, args.flow_cache, device=args.device)
    for key, reason in data.failures:
        print(f"skipped {key}: {reason}", file=sys.stderr)
    model, info = train_rcf(data, cfg, device=args.device, weights=args.weights, log=sys.stderr)
    save_checkpoint(args.output, model, cfg, info)
    atomic_write_json(Path(args.output).with_suffix(".json"),
                      {"config": cfg.to_dict(), "sequences": [s.key for s in seqs], "failures": data.failures,
                       "num_pairs": len(data.pairs), **info}, indent=1)
    print(f"wrote {args.output}: {describe(info)}", file=sys.stderr)
    return 0

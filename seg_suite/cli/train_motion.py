"""``seg-suite train-motion``: train the RCF-style segmenter on unlabeled videos."""

from __future__ import annotations


def register(subparsers) -> None:
    from seg_suite.pseudo.motion.flow import DIS_PRESETS
    from seg_suite.pseudo.motion.rcf_model import BACKBONES
    from seg_suite.pseudo.motion.rcf_train import RCFConfig

    d = RCFConfig()
    parser = subparsers.add_parser(
        "train-motion",
        help="train an RCF-style motion segmenter on unlabeled videos",
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
    )
    parser.add_argument("--input", required=True, metavar="VIDEO|DIR",
                        help="training videos: same forms as motion-masks --input (DAVIS root, synthetic root, "
                             "folder of frame folders or video files)")
    parser.add_argument("--output", required=True, metavar="CKPT.pth",
                        help="checkpoint to write (atomically; .pth, .pt, .bin or .ckpt); a sibling CKPT.json holds "
                             "the config and losses")
    parser.add_argument("--backbone", default=d.backbone, choices=BACKBONES,
                        help="ResNet (default: %(default)s for CPU; RCF uses resnet50 from DenseCL weights)")
    parser.add_argument("--weights", default=None, metavar="PATH",
                        help="local torchvision ResNet state dict to start from, checked before any flow is "
                             "computed (default: random init; nothing is downloaded)")
    parser.add_argument("--num-masks", type=int, default=d.num_masks, help="K masks (default: %(default)s, RCF mask_layer)")
    parser.add_argument("--size", default=f"{d.size[0]}x{d.size[1]}", metavar="HxW",
                        help="frames are resized to this for training and inference (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=d.steps,
                        help="motion-stage steps (default: %(default)s; RCF: 200 epochs of DAVIS on a GPU)")
    parser.add_argument("--stage2-steps", type=int, default=d.stage2_steps,
                        help="appearance-stage steps with dense-CRF targets (default: %(default)s = skip; RCF: 20 epochs)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="frame pairs per step (default: %(default)s, RCF)")
    parser.add_argument("--lr", type=float, default=d.lr, help="motion-stage Adam learning rate (default: %(default)s, RCF)")
    parser.add_argument("--gaps", default="1", metavar="1[,2]", help="frame gaps of the training pairs (default: %(default)s)")
    parser.add_argument("--flow-preset", default=d.flow_preset, choices=DIS_PRESETS,
                        help="DIS preset of the training flows (default: %(default)s)")
    parser.add_argument("--flow-cache", default=None, metavar="DIR", help="reuse/cache flows here (default: none)")
    parser.add_argument("--device", default="cpu", metavar="cpu|cuda", help="training device (default: cpu)")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args) -> int:
    import sys
    from dataclasses import replace
    from pathlib import Path

    from seg_suite.cli import _common
    from seg_suite.errors import UserError
    from seg_suite.io.checkpoints import TORCH_SUFFIXES
    from seg_suite.io.files import atomic_write_json
    from seg_suite.pseudo.motion.rcf_model import RCFNet
    from seg_suite.pseudo.motion.rcf_train import RCFConfig, describe, load_pairs, save_checkpoint, train_rcf
    from seg_suite.pseudo.motion.video import discover_sequences

    try:
        h, w = (int(v) for v in args.size.lower().split("x"))
        gaps = tuple(sorted({int(g) for g in args.gaps.split(",") if g.strip()}))
    except ValueError:
        raise UserError(f"--size must be HxW and --gaps comma-separated integers (got {args.size!r}, {args.gaps!r})") from None
    if h < 32 or w < 32 or h % 4 or w % 4:
        raise UserError("--size sides must be multiples of 4 and at least 32")
    if args.steps < 1 or args.stage2_steps < 0 or args.batch_size < 1 or args.num_masks < 2 or not gaps or gaps[0] < 1:
        raise UserError("need --steps >= 1, --stage2-steps >= 0, --batch-size >= 1, --num-masks >= 2, gaps >= 1")
    from seg_suite.devices import resolve_device

    resolve_device(args.device)
    cfg = replace(RCFConfig(), backbone=args.backbone, num_masks=args.num_masks, size=(h, w), steps=args.steps,
                  stage2_steps=args.stage2_steps, batch_size=args.batch_size, lr=args.lr, gaps=gaps,
                  flow_preset=args.flow_preset, seed=args.seed)
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

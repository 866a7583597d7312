#!/usr/bin/env python
"""Train or evaluate a Mask2Former-style model with detectron2 (the official ``train_net.py`` interface).

    tools/train_net.py --config-file configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml --num-gpus 8
    tools/train_net.py --config-file configs/synthetic/maskformer2_R50_tiny_cpu.yaml --num-gpus 0
    tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS model_final.pth
    tools/train_net.py --config-file CFG --resume      # continue after the newest checkpoint that loads
    tools/train_net.py --config-file CFG --eval-only --allow-untrained   # a random model's scores

Config files are read as data (a YAML Python tag is refused) and checked before anything is
written. Exit codes: 0 done, 2 a mistake in the command or its files (one ``error:`` line),
130 Ctrl-C, 143 SIGTERM; after either stop, rerun with --resume.

The flags are parsed by seg_suite/cli/_train_net.py, which calls seg_suite.engine.api's
``train(cfg, ...)`` / ``evaluate(cfg, ...)``, the same calls self-training and the pipeline make.
"""

import sys

from seg_suite.cli._train_net import run

if __name__ == "__main__":
    sys.exit(run())

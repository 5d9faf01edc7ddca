#!/usr/bin/env python
"""Train or evaluate a ViTDet LazyConfig (detectron2's lazyconfig_train_net conventions).

    python tools/train_net.py --config-file configs/Synthetic/mask_rcnn_vitdet_tiny.py \
        train.output_dir=output/synthetic
    python tools/train_net.py --config-file configs/COCO/mask_rcnn_vitdet_b_100ep.py \
        --num-gpus 8 train.grad_accum_steps=2 train.amp.dtype=bfloat16
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29400 \
        tools/train_net.py --config-file configs/COCO/mask_rcnn_vitdet_b_100ep.py
    python tools/train_net.py --config-file configs/COCO/mask_rcnn_vitdet_b_100ep.py \
        --register-coco shapes data/shapes/train.json data/shapes/train \
        --register-coco shapes_val data/shapes/val.json data/shapes/val \
        dataloader.train.dataset.names=shapes dataloader.test.dataset.names=shapes_val
    python tools/train_net.py --config-file CONFIG --eval-only train.init_checkpoint=model.pth
"""

import sys

from detectron2.engine import default_argument_parser

from vitdet.checkpoint import CheckpointError
from vitdet.config import ConfigError
from vitdet.data import DatasetError
from vitdet.engine import evaluate_only, launch_main, run_provenance, setup_run, train

# A bad override or setting, a bad dataset, weights that are not what they claim.
USER_ERRORS = (ConfigError, DatasetError, CheckpointError)


def build_parser():
    parser = default_argument_parser(epilog=__doc__)
    parser.add_argument(
        "--register-coco",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "ANNOTATIONS_JSON", "IMAGE_DIR"),
        help="register a COCO-format instance dataset under NAME (repeatable); select it with "
        "dataloader.train.dataset.names=NAME / dataloader.test.dataset.names=NAME",
    )
    return parser


def main(args) -> None:
    cfg = setup_run(args.config_file, args.opts, args=args, coco_datasets=args.register_coco)
    if args.eval_only:
        evaluate_only(cfg, resume=args.resume)
    else:
        provenance = run_provenance(cfg, args.config_file, args.opts)
        train(cfg, resume=args.resume, provenance=provenance)


def cli(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return launch_main(main, args, prog="train_net.py", user_errors=USER_ERRORS)


if __name__ == "__main__":
    sys.exit(cli())

#!/usr/bin/env python
"""MAE pretraining of the ViT on a folder of unlabeled images (LazyConfig, detectron2 launcher).

    python tools/pretrain_mae.py --config-file configs/MAE/mae_vit_tiny_synthetic.py
    python tools/pretrain_mae.py --config-file configs/MAE/mae_vit_b.py --num-gpus 8 \
        dataloader.train.dataset.root=/data/my_images train.output_dir=output/mae_mine
    python tools/pretrain_mae.py --config-file CONFIG --resume train.output_dir=<same dir>

Writes checkpoints (model_final.pth is a train.init_checkpoint for ViTDet configs),
metrics.json, TensorBoard events and reconstructions/iter_*.png to train.output_dir.
"""

import sys

from detectron2.engine import default_argument_parser

from vitdet.checkpoint import CheckpointError
from vitdet.config import ConfigError
from vitdet.engine import launch_main, pretrain, run_provenance, setup_run


def main(args) -> None:
    cfg = setup_run(args.config_file, args.opts, args=args)
    provenance = run_provenance(cfg, args.config_file, args.opts)
    pretrain(cfg, resume=args.resume, provenance=provenance)


def cli(argv=None) -> int:
    args = default_argument_parser(epilog=__doc__).parse_args(argv)
    # a bad override, a missing image folder, weights that are not what they claim
    user_errors = (ConfigError, FileNotFoundError, CheckpointError)
    return launch_main(main, args, prog="pretrain_mae.py", user_errors=user_errors)


if __name__ == "__main__":
    sys.exit(cli())

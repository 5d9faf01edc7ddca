#!/usr/bin/env python
"""Convert a pretrained checkpoint (MAE, timm, released ViTDet .pkl, own .pth) to this layout.

    tools/convert_pretrained.py mae_pretrain_vit_huge.pth vit_h_p14to16.pth \\
        --config-file configs/COCO/mask_rcnn_vitdet_h_75ep.py [KEY=VALUE ...]

Without ``--config-file`` only the names change (the ViT goes under ``backbone.net.``). With it,
the target model is built on the meta device (no memory, no init), position embeddings, patch
kernels and rel-pos tables are resampled to its shapes, and every key is checked strictly. The
output loads with ``vitdet.checkpoint.load_checkpoint`` (``train.init_checkpoint``).
"""

import argparse
import logging
import sys
from pathlib import Path

import torch
from detectron2.config import instantiate

from vitdet.checkpoint import FORMATS, CheckpointError, convert_checkpoint
from vitdet.config import ConfigError, load_config, one_line, writable_dir


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="checkpoint to convert (.pth / .pkl / PathManager URL)")
    parser.add_argument("output", help="converted .pth to write")
    parser.add_argument("--format", default="auto", choices=["auto", *FORMATS])
    parser.add_argument("--config-file", help="LazyConfig of the target model (resample, check)")
    parser.add_argument("opts", nargs="*", help="config overrides KEY=VALUE")
    args = parser.parse_intermixed_args(argv)
    if args.opts and not args.config_file:
        parser.error("config overrides need --config-file")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    target = None
    try:
        writable_dir(Path(args.output).resolve().parent, what="output")
        if args.config_file:
            cfg = load_config(args.config_file, args.opts)
            with torch.device("meta"):
                target = instantiate(cfg.model)
        report = convert_checkpoint(
            args.input, args.output, source_format=args.format, target=target
        )
    except (CheckpointError, ConfigError) as e:  # unsafe, not a checkpoint, not fitting
        print(f"convert_pretrained.py: error: {one_line(e)}", file=sys.stderr)
        return 2
    logging.info("%s\nwrote %s", report.summary(), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Export SAM to ONNX: the prompt path (prompt encoder + mask decoder, the release's input
convention) and the image encoder, each verified against eager with onnxruntime.

    tools/sam_export.py --model-type vit_b --checkpoint sam_vit_b_01ec64.pth --output export/ \
        [--return-single-mask]

Writes ``<output>/sam_<model-type>_prompt.onnx`` and ``..._encoder.onnx`` (inputs and outputs:
``vitdet/sam/export.py``) and prints the largest difference of every output; exit status 1 if
any exceeds ``--tolerance``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from vitdet.sam import SamPredictor, build_sam
from vitdet.sam.build import MODEL_TYPES
from vitdet.sam.export import (
    SamEncoderForExport,
    SamPromptForExport,
    encoder_input,
    export_onnx,
    max_abs_diffs,
    prompt_sample,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-type", default="vit_b", choices=MODEL_TYPES)
    parser.add_argument("--checkpoint", help="SAM weights; random without (smoke runs)")
    parser.add_argument("--output", required=True, help="directory for the .onnx files")
    parser.add_argument("--return-single-mask", action="store_true")
    parser.add_argument("--tolerance", type=float, default=1e-3)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = build_sam(args.model_type, args.checkpoint)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    # a sample: a random picture, one point and a padding point
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    encoder = SamEncoderForExport(model)
    x = encoder_input(model, image)
    predictor = SamPredictor(model)
    predictor.set_image(image)
    prompt = SamPromptForExport(model, return_single_mask=args.return_single_mask)
    sample = prompt_sample(
        model,
        predictor.get_image_embedding(),
        np.array([[320.0, 240.0], [0.0, 0.0]]),
        np.array([1, -1]),
        image.shape[:2],
    )
    worst = 0.0
    for name, module, inputs in (("prompt", prompt, sample), ("encoder", encoder, [x])):
        path = out / f"sam_{args.model_type}_{name}.onnx"
        export_onnx(module, inputs, path)
        diffs = max_abs_diffs(module, path, inputs)
        worst = max(worst, *diffs.values())
        shown = ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())
        print(f"{path}: max abs diff vs eager: {shown}")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Export a trained ViTDet detector, or its backbone, to TorchScript or ONNX at a fixed size.

    tools/export.py --config-file configs/COCO/mask_rcnn_vitdet_b_100ep.py \\
        --weights model_final.pth --format onnx --what model --output export/model.onnx \\
        [--height 1024 --width 1024] [--sample-image photo.jpg] [-- key=value ...]

The input size defaults to the config's square (``square_pad``, 1024 for the COCO recipes).
Prints what it wrote and the I/O spec (also stored in the file: ``vitdet.export.read_metadata``),
then runs the export on the sample (a seeded random image unless ``--sample-image``; for the
model also on its mirror image) and prints the largest |exported - eager| per output.
How to run the exports without this package: docs/EXPORT.md. Exit status: 0 when the export
matches eager within ``vitdet.export.TOLERANCES``, 1 when it does not, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

from vitdet.checkpoint import CheckpointError
from vitdet.config import ConfigError, one_line, writable_dir
from vitdet.data import DatasetError
from vitdet.data.images import ImageReadError, read_image
from vitdet.export import (
    BackboneForExport,
    DetectorForExport,
    canvas_input,
    eager_detections,
    export_metadata,
    export_onnx,
    export_torchscript,
    io_spec,
    max_abs_diffs,
    normalize_canvas,
    out_of_tolerance,
    run_onnx,
    run_torchscript,
)
from vitdet.predictor import Predictor
from vitdet.provenance import read_provenance

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE = 0, 1, 2
EXPORTERS = {"torchscript": (export_torchscript, run_torchscript), "onnx": (export_onnx, run_onnx)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--config-file",
        help="LazyConfig (.py) of the model (default: the one a training checkpoint records)",
    )
    parser.add_argument("--weights", required=True, help="trained detector weights (.pth, .pkl)")
    parser.add_argument("--format", required=True, choices=sorted(EXPORTERS))
    parser.add_argument(
        "--what",
        default="model",
        choices=["model", "backbone"],
        help="model: image -> boxes, classes, scores, masks; backbone: image -> p2..p6",
    )
    parser.add_argument("--height", type=int, help="input height (default: square_pad)")
    parser.add_argument("--width", type=int, help="input width (default: square_pad)")
    parser.add_argument("--output", required=True, help="file to write (.pt, .onnx)")
    parser.add_argument("--sample-image", help="image to trace and verify on (default: random)")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value, last")
    args = parser.parse_args(argv)
    for option, path in (("--config-file", args.config_file), ("--weights", args.weights)):
        if path is not None and not os.path.isfile(path):
            parser.error(f"{option}: no such file: {path}")
    if args.output.endswith(("/", os.sep)) or os.path.isdir(args.output):
        parser.error(
            f"--output names the file to write (model.pt, model.onnx), not a folder: {args.output}"
        )
    return args


def _print_spec(spec: dict) -> None:
    for kind in ("inputs", "outputs"):
        print(f"{kind}:")
        for name, entry in spec[kind].items():
            shape = ", ".join(str(s) for s in entry["shape"])
            print(f"  {name}: {entry['dtype']} ({shape})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        writable_dir(Path(args.output).resolve().parent, what="--output")
        predictor = Predictor.from_config_file(
            args.config_file, args.weights, overrides=args.overrides, device="cpu"
        )
    except CheckpointError as e:
        print(f"error: --weights: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except (ConfigError, DatasetError, FileNotFoundError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    model = predictor.model
    square = model.backbone.square_pad
    height, width = args.height or square, args.width or square
    if not height or not width:
        print("error: the backbone has no square_pad: give --height and --width", file=sys.stderr)
        return EXIT_USAGE

    if args.sample_image:
        try:
            image = read_image(args.sample_image)
        except ImageReadError as e:
            print(f"error: --sample-image {e}", file=sys.stderr)
            return EXIT_USAGE
    else:
        image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    # The test-time resize, as the evaluation applies it; mirrored: a second check.
    resized = [predictor.preprocess(im)["image"] for im in (image, image[:, ::-1])]
    try:
        canvases = [canvas_input(r, height, width) for r in resized]
    except ValueError as e:
        print(f"error: {e}: raise --height / --width", file=sys.stderr)
        return EXIT_USAGE

    if args.what == "model":
        module = DetectorForExport(model).eval()
        samples = canvases
        expected = [eager_detections(model, r) for r in resized]
    else:
        module = BackboneForExport(model.backbone).eval()
        samples = [(normalize_canvas(model, *canvases[0])[None],)]  # 1 3 H W
        with torch.no_grad():
            expected = [module(*samples[0])]

    spec = io_spec(module, samples[0])
    metadata = {
        "what": args.what,
        "config": Path(args.config_file or read_provenance(args.weights).config_file).name,
        **export_metadata(predictor),
        **spec,
    }
    export, run = EXPORTERS[args.format]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    export(module, samples[0], args.output, metadata=metadata)
    print(f"wrote {args.format} of the {args.what} ({height} x {width}) to {args.output}")
    _print_spec(spec)

    failed = False
    for i, (sample, want) in enumerate(zip(samples, expected, strict=True)):
        diffs = max_abs_diffs(module.output_names, want, run(args.output, sample))
        bad = out_of_tolerance(diffs)
        failed |= bool(bad)
        found = f", {len(want[0])} detections" if args.what == "model" else ""
        shown = ", ".join(f"{name} {d:.3g}" for name, d in diffs.items())
        verdict = f"FAILED ({', '.join(bad)})" if bad else "ok"
        print(f"max |{args.format} - eager| on sample {i}{found}: {shown}: {verdict}")
    return EXIT_MISMATCH if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Draw a trained model's detections on images and videos, and save them as COCO results.

    tools/demo.py --config-file configs/Synthetic/mask_rcnn_vitdet_tiny.py \
        --weights output/synthetic/model_final.pth \
        --input datasets/synthetic/val 'more/*.jpg' clip.mp4 --output output/demo \
        [--confidence-threshold 0.5] [-- key=value ...]

Inputs are files, directories (searched recursively for image and video files) and glob
patterns. A checkpoint written by tools/train_net.py records its config and class names:
``--config-file`` may then be left out, and no dataset is needed. Writes ``<output>/<name>.jpg``
per image, ``<name>.mp4`` per video and ``<output>/predictions.json`` (see ``vitdet/demo.py``;
how odd images are read: ``vitdet/data/images.py``). Config overrides go last, after ``--`` or
after an option that takes one value. Exit status: 0 when every input succeeded, 1 when any
failed (each reported as ``FAILED <path>: <reason>``), 2 on usage errors such as no input
matching.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import re
import sys
from pathlib import Path

from tqdm import tqdm

from vitdet.checkpoint import CheckpointError
from vitdet.config import ConfigError, one_line, writable_dir
from vitdet.data import DatasetError
from vitdet.data.images import ImageReadError, expand_inputs
from vitdet.demo import annotate, output_names, write_predictions
from vitdet.predictor import Predictor

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--config-file",
        help="LazyConfig (.py) of the model (default: the one a training checkpoint records)",
    )
    parser.add_argument("--weights", required=True, help="trained detector weights (.pth, .pkl)")
    parser.add_argument(
        "--input", nargs="+", required=True, help="image / video files, directories, globs"
    )
    parser.add_argument("--output", required=True, help="directory for pictures and json")
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.5,
        help="draw and record detections scoring at least this (default: 0.5)",
    )
    parser.add_argument(
        "--register-coco",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "JSON", "IMAGE_DIR"),
        help="register a COCO-format dataset (as in training) for class names and count",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides key=value, last")
    args = parser.parse_args(argv)
    misplaced = [s for s in args.input if OVERRIDE.match(s) and not os.path.exists(s)]
    if misplaced:
        parser.error(f"{misplaced} look like config overrides: put them after '--'")
    for option, path in (("--config-file", args.config_file), ("--weights", args.weights)):
        if path is not None and not os.path.isfile(path):
            parser.error(f"{option}: no such file: {path}")
    return args


def run(predictor: Predictor, inputs: list[Path], output_dir: Path) -> list[str]:
    """Annotate every input with a progress bar; each failure is reported as ``FAILED <path>:
    <reason>`` and the others still run. ``predictions.json`` is written even when some fail.
    Returns the inputs that failed."""
    image_ids = itertools.count()
    results: list[dict] = []
    failures = []
    names = output_names(inputs)
    for path, name in zip(tqdm(inputs, desc="demo", unit="input"), names, strict=True):
        try:
            results += annotate(predictor, path, output_dir / name, image_ids)
        except ImageReadError as e:
            failures.append(str(path))
            tqdm.write(f"FAILED {path}: {e.reason}", file=sys.stderr)
        except Exception as e:  # one input's failure must not end the batch
            logging.getLogger("demo").exception("unexpected error on %s", path)
            failures.append(str(path))
            tqdm.write(f"FAILED {path}: {type(e).__name__}: {e}", file=sys.stderr)
    predictions = write_predictions(output_dir, results)
    logging.info(
        "%d of %d inputs done, %d detections -> %s",
        len(inputs) - len(failures),
        len(inputs),
        len(results),
        predictions,
    )
    return failures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        writable_dir(args.output, what="--output")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    inputs, unmatched = expand_inputs(args.input)
    for spec in unmatched:
        print(f"FAILED {spec}: no file matches", file=sys.stderr)
    if not inputs:
        print("error: no input files found", file=sys.stderr)
        return EXIT_USAGE
    try:
        predictor = Predictor.from_config_file(
            args.config_file,
            args.weights,
            overrides=args.overrides,
            coco_datasets=args.register_coco,
            score_threshold=args.confidence_threshold,
        )
    except CheckpointError as e:  # weights of another model, or not a checkpoint
        print(f"error: --weights: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except (ConfigError, DatasetError, FileNotFoundError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    failures = run(predictor, inputs, Path(args.output))
    num_failed = len(failures) + len(unmatched)
    if num_failed:
        print(f"{num_failed} input(s) failed", file=sys.stderr)
    return EXIT_SOME_FAILED if num_failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

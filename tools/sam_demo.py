#!/usr/bin/env python
"""Segment images with SAM: prompts from a JSON or COCO file, or everything automatically.

    tools/sam_demo.py --model-type vit_b --checkpoint sam_vit_b_01ec64.pth \
        --input photos/ 'more/*.jpg' --output output/sam \
        (--prompts prompts.json | --coco annotations.json | --everything)

Inputs are files, directories (searched recursively for images) and glob patterns. Prompt
formats: ``vitdet/sam/demo.py``. Writes ``<output>/<name>.jpg`` per image (masks and prompts
drawn) and ``<output>/masks.json`` (one record per mask: image_id, file_name, COCO RLE
segmentation, bbox [x, y, w, h], area, score = predicted IoU, the prompt or category_id).
Without --checkpoint the weights are random (smoke runs). Exit status: 0 when every input
succeeded, 1 when any failed (each reported as ``FAILED <path>: <reason>``), 2 on usage errors
(no input matching, an unreadable prompt file or checkpoint).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from vitdet.checkpoint import CheckpointError
from vitdet.data.images import ImageReadError, expand_inputs, is_video, read_image
from vitdet.demo import output_names
from vitdet.sam import SamAutomaticMaskGenerator, SamPredictor, build_sam
from vitdet.sam.build import MODEL_TYPES
from vitdet.sam.demo import (
    PromptError,
    draw_masks,
    load_coco_prompts,
    load_prompt_file,
    prompts_for,
    segment_everything,
    segment_prompts,
)

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
MASKS_FILE = "masks.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model-type", default="vit_b", choices=MODEL_TYPES)
    parser.add_argument("--checkpoint", help="SAM weights (the release's sam_vit_*.pth)")
    parser.add_argument("--input", nargs="+", required=True, help="image files, directories, globs")
    parser.add_argument("--output", required=True, help="directory for pictures and masks.json")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompts", help="prompt JSON file (points with labels, boxes)")
    source.add_argument("--coco", help="COCO annotation file: its boxes are the prompts")
    source.add_argument("--everything", action="store_true", help="automatic masks")
    parser.add_argument("--points-per-side", type=int, default=32, help="--everything grid")
    parser.add_argument("--pred-iou-thresh", type=float, default=0.88, help="--everything")
    parser.add_argument("--stability-score-thresh", type=float, default=0.95, help="--everything")
    args = parser.parse_args(argv)
    if args.checkpoint and not Path(args.checkpoint).is_file():
        parser.error(f"--checkpoint: no such file: {args.checkpoint}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    inputs, unmatched = expand_inputs(args.input)
    for spec in unmatched:
        print(f"FAILED {spec}: no file matches", file=sys.stderr)
    if not inputs:
        print("error: no input files found", file=sys.stderr)
        return EXIT_USAGE
    try:
        table = None
        if args.prompts:
            table = load_prompt_file(args.prompts)
        elif args.coco:
            table = load_coco_prompts(args.coco)
        model = build_sam(args.model_type, args.checkpoint)
    except (PromptError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.checkpoint is None:
        logging.warning("no --checkpoint: random weights, the masks mean nothing")
    predictor = SamPredictor(model)
    generator = None
    if args.everything:
        generator = SamAutomaticMaskGenerator(
            model,
            points_per_side=args.points_per_side,
            pred_iou_thresh=args.pred_iou_thresh,
            stability_score_thresh=args.stability_score_thresh,
        )

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    failures = []
    names = output_names(inputs)
    for image_id, (path, name) in enumerate(
        zip(tqdm(inputs, desc="sam", unit="image"), names, strict=True)
    ):
        try:
            if is_video(path):
                raise ImageReadError(path, "videos are not supported by the SAM demo")
            image = read_image(path)
            relative = name + path.suffix
            if generator is not None:
                masks, found = segment_everything(
                    generator, image, image_id=image_id, file_name=str(path)
                )
                prompts = []
            else:
                prompts = prompts_for(table, path, relative)
                masks, found = segment_prompts(
                    predictor, image, prompts, image_id=image_id, file_name=str(path)
                )
            out = output / f"{name}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(draw_masks(image, masks, prompts)).save(out, quality=95)
            records += found
        except (ImageReadError, PromptError) as e:
            failures.append(str(path))
            reason = e.reason if isinstance(e, ImageReadError) else str(e)
            tqdm.write(f"FAILED {path}: {reason}", file=sys.stderr)
        except Exception as e:  # one input's failure must not end the batch
            logging.getLogger("sam_demo").exception("unexpected error on %s", path)
            failures.append(str(path))
            tqdm.write(f"FAILED {path}: {type(e).__name__}: {e}", file=sys.stderr)
    (output / MASKS_FILE).write_text(json.dumps(records))
    logging.info(
        "%d of %d images done, %d masks -> %s",
        len(inputs) - len(failures),
        len(inputs),
        len(records),
        output / MASKS_FILE,
    )
    num_failed = len(failures) + len(unmatched)
    if num_failed:
        print(f"{num_failed} input(s) failed", file=sys.stderr)
    return EXIT_SOME_FAILED if num_failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

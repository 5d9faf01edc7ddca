#!/usr/bin/env python
"""Generate the seeded synthetic shapes set in COCO format (``vitdet/data/synthetic.py``).

    python tools/make_synthetic.py --root datasets/synthetic [--num-train 600 --num-val 100]

Does nothing when a complete set with these parameters is already there.
"""

import argparse
import json

from vitdet.data.synthetic import generate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="output folder, e.g. datasets/synthetic")
    parser.add_argument("--num-train", type=int, default=600)
    parser.add_argument("--num-val", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="regenerate even if complete")
    args = parser.parse_args(argv)
    splits = generate(
        args.root,
        num_train=args.num_train,
        num_val=args.num_val,
        image_size=args.image_size,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    for name, (json_file, image_dir) in splits.items():
        coco = json.loads(json_file.read_text())
        print(
            f"{name}: {len(coco['images'])} images, {len(coco['annotations'])} objects "
            f"in {image_dir}, annotations {json_file}"
        )


if __name__ == "__main__":
    main()

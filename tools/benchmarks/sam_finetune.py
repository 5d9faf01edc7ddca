#!/usr/bin/env python
"""SAM trained and fine-tuned with tools/train_net.py on the synthetic set, on the CPU.

    OMP_NUM_THREADS=1 nice python tools/benchmarks/sam_finetune.py --output-dir output/sam_benchmark

1. ``scratch``: configs/SAM/sam_vit_tiny_synthetic.py from scratch on variant A (synthetic_train,
   256 px, seed 0); prompted mIoU on synthetic_val against training CPU minutes (evaluations
   excluded).
2. Variant B: the same generator at 384 px with seed 1 (objects keep their pixel sizes, so after
   the resize to 256 they are 1.5x smaller; other images), 200 train / 100 val images,
   registered with ``--register-coco``.
3. ``before``: the scratch checkpoint evaluated on B's val (``--eval-only``).
4. ``finetune``: from that checkpoint, frozen encoder with cached embeddings, on B's train
   (``--finetune-iters``), evaluated on B's val.

Every stage is a train_net run in its own folder under ``--output-dir`` and resumes
(``--resume``) or is skipped when done, so an interrupted benchmark picks up where it stopped.
Writes ``table.md`` and ``curve.png`` there. Trailing ``key=value`` arguments override the
config of every stage (the model evaluated on B is the one trained on A; B's data, weights and
fine-tuning schedule are set after them).
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from matplotlib.figure import Figure

from vitdet.data.synthetic import generate
from vitdet.engine import evaluation_rows

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "SAM" / "sam_vit_tiny_synthetic.py"
PROMPTS = ("box", "point", "click3", "click5")


def train_net(args: list[str]) -> None:
    command = [sys.executable, str(REPO / "tools" / "train_net.py"), *args]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def final_results(folder: Path) -> dict:
    return json.loads((folder / "eval_results.json").read_text())["sam"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="output/sam_benchmark")
    parser.add_argument("--finetune-iters", type=int, default=400)
    parser.add_argument("--finetune-lr", type=float, default=3e-4)
    parser.add_argument("opts", nargs="*", help="key=value overrides of every stage's config")
    args = parser.parse_args()
    out = Path(args.output_dir).resolve()
    scratch, before, finetune = out / "scratch", out / "before", out / "finetune"

    if not (scratch / "model_final.pth").is_file():
        train_net(
            ["--config-file", str(CONFIG), "--resume", f"train.output_dir={scratch}", *args.opts]
        )

    (b_train, b_train_dir), (b_val, b_val_dir) = generate(
        out / "variant_b", num_train=200, num_val=100, image_size=384, seed=1
    ).values()
    register = [
        "--register-coco", "variant_b_train", str(b_train), str(b_train_dir),
        "--register-coco", "variant_b_val", str(b_val), str(b_val_dir),
    ]  # fmt: skip
    on_b = [
        "dataloader.train.dataset.names=variant_b_train",
        "dataloader.test.dataset.names=variant_b_val",
    ]
    weights = f"train.init_checkpoint={scratch / 'model_final.pth'}"
    if not (before / "eval_results.json").is_file():
        train_net(
            ["--config-file", str(CONFIG), "--eval-only", *register, *args.opts, *on_b,
             weights, f"train.output_dir={before}"]
        )  # fmt: skip
    if not (finetune / "model_final.pth").is_file():
        iters = args.finetune_iters
        train_net(
            ["--config-file", str(CONFIG), "--resume", *register, *args.opts, *on_b, weights,
             f"train.output_dir={finetune}", "model.freeze_image_encoder=True",
             "model.embedding_cache_size=1000", f"train.max_iter={iters}",
             f"train.eval_period={iters}", f"train.checkpointer.period={iters}",
             f"optimizer.lr={args.finetune_lr}", "lr_multiplier.warmup_length=0.1"]
        )  # fmt: skip

    rows = evaluation_rows(scratch, "sam/box_mIoU")
    lines = [
        "From scratch on variant A (synthetic_train), evaluated on synthetic_val:",
        "",
        "| iterations | CPU min | " + " | ".join(f"{p} mIoU" for p in PROMPTS) + " |",
        "|---" * (2 + len(PROMPTS)) + "|",
    ]
    for r in rows:
        values = " | ".join(f"{r[f'sam/{p}_mIoU']:.3f}" for p in PROMPTS)
        minutes = r["train_cpu_seconds"] / 60
        lines.append(f"| {int(r['train_iterations'])} | {minutes:.1f} | {values} |")
    lines += [
        "",
        f"Variant B (384 px, seed 1) val, the scratch checkpoint before and after "
        f"{args.finetune_iters} iterations of fine-tuning (frozen encoder) on B's train:",
        "",
        "| weights | " + " | ".join(f"{p} mIoU" for p in PROMPTS) + " |",
        "|---" * (1 + len(PROMPTS)) + "|",
    ]
    for name, folder in (("scratch (A)", before), ("fine-tuned on B", finetune)):
        res = final_results(folder)
        lines.append(f"| {name} | " + " | ".join(f"{res[f'{p}_mIoU']:.3f}" for p in PROMPTS) + " |")
    table = "\n".join(lines) + "\n"
    (out / "table.md").write_text(table)
    print(table)

    figure = Figure(figsize=(6, 4))
    ax = figure.subplots()
    for p in PROMPTS:
        minutes = [r["train_cpu_seconds"] / 60 for r in rows]
        ax.plot(minutes, [r[f"sam/{p}_mIoU"] for r in rows], marker="o", label=p)
    ax.set_xlabel("training CPU minutes (main process)")
    ax.set_ylabel("mIoU on synthetic_val")
    ax.set_title("SAM tiny from scratch, 2-core CPU")
    ax.grid(alpha=0.3)
    ax.legend()
    figure.savefig(out / "curve.png", dpi=120, bbox_inches="tight")
    print(f"written: {out / 'table.md'}, {out / 'curve.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

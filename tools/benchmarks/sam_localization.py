#!/usr/bin/env python
"""How fast a SAM prompt path trained from scratch learns to localise a point prompt, on the CPU.

    OMP_NUM_THREADS=1 python tools/benchmarks/sam_localization.py [--steps 300] [--json out.json]

The smallest part of training SAM from scratch: the prompt encoder and mask decoder of
configs/SAM/sam_vit_tiny_synthetic.py, on a constant (all-zero) image embedding, learn to answer
a random point with the disk of radius 30 px around it (256 px frame), with the training losses
(focal 20 : dice 1, single output, AdamW, batch 16 points, no warm-up). There is nothing to see
in the image: the only way to the disk is the point's position encoding meeting the image
tokens' encodings in the decoder's attention. A model that cannot do this predicts one mask for
every prompt, which is what the full from-scratch run does for its first few hundred iterations.

For each setting (``tie_query_key_init``, decoder heads, lr) and seed (the model's
initialisation and the stream of points; the same seeds for every setting), prints the loss and
the mean IoU of the thresholded output every 50 steps; the table gives the step at which the IoU
first passes 0.5 for each seed and the mean IoU at the last step. When the plateau ends varies a
lot from seed to seed: compare settings over several seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from detectron2.config import instantiate

from vitdet.config import load_config
from vitdet.device import cpu_model
from vitdet.modeling.sam.training import dice_loss, mask_iou, sigmoid_focal_loss

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "SAM" / "sam_vit_tiny_synthetic.py"
SETTINGS = (  # (tie_query_key_init, decoder heads, lr)
    (False, 4, 1e-3),  # the release's decoder, initialised as the release
    (True, 4, 1e-3),
    (False, 1, 1e-3),
    (True, 1, 1e-3),
    (True, 1, 2e-3),
)
RADIUS, BATCH = 30.0, 16


def disks(points: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 2) (x, y) pixel points -> (N, size, size) float disks on the grid's cell centres of a
    256 px frame (``size`` cells a side)."""
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) * (256 / size)
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    dx, dy = x - points[:, 0, None, None], y - points[:, 1, None, None]
    return (dx**2 + dy**2 < RADIUS**2).float()


def run(tied: bool, heads: int, lr: float, *, steps: int, seed: int = 0) -> list[dict]:
    cfg = load_config(str(CONFIG))
    cfg.model.tie_query_key_init = tied
    cfg.model.mask_decoder.transformer.num_heads = heads
    torch.manual_seed(seed)
    model = instantiate(cfg.model)
    params = [*model.prompt_encoder.parameters(), *model.mask_decoder.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr)
    embedding = torch.zeros(
        model.prompt_encoder.embed_dim, *model.prompt_encoder.image_embedding_size
    )
    low = model.prompt_encoder.mask_input_size[0]
    points_rng = torch.Generator().manual_seed(1000 + seed)
    labels = torch.tensor([[1, -1]] * BATCH)  # one point and padding
    rows, start = [], time.process_time()
    for step in range(steps + 1):
        points = torch.rand(BATCH, 2, generator=points_rng) * 256
        coords = torch.stack([points, torch.zeros_like(points)], dim=1)
        target = disks(points, low)
        logits = model.decode(embedding, coords, labels, None)[0][:, 0]
        loss = (20 * sigmoid_focal_loss(logits, target) + dice_loss(logits, target)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            iou = mask_iou(logits.detach() > 0, target > 0.5).mean().item()
            rows.append({"step": step, "loss": loss.item(), "iou": iou})
            print(f"  step {step:4d}  loss {loss.item():.3f}  IoU {iou:.3f}", flush=True)
    print(f"  {time.process_time() - start:.0f} CPU s", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    print(f"{cpu_model()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    results, lines = [], []
    for tied, heads, lr in SETTINGS:
        firsts, finals = [], []
        for seed in range(args.seeds):
            print(f"tie_query_key_init={tied} heads={heads} lr={lr:g} seed={seed}", flush=True)
            rows = run(tied, heads, lr, steps=args.steps, seed=seed)
            first = next((r["step"] for r in rows if r["iou"] >= 0.5), None)
            firsts.append(str(first) if first is not None else f">{args.steps}")
            finals.append(rows[-1]["iou"])
            results.append({"tied": tied, "heads": heads, "lr": lr, "seed": seed, "rows": rows})
        final = sum(finals) / len(finals)
        lines.append(f"| {tied} | {heads} | {lr:g} | {', '.join(firsts)} | {final:.2f} |")
    print(f"\n| tied q/k | heads | lr | IoU >= 0.5 at step (seeds 0-{args.seeds - 1}) |", end="")
    print(f" mean IoU at step {args.steps} |\n|---|---|---|---|---|")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""SAM on our ViT against the segment_anything release, same weights, one process, CPU.

    nice .venv/bin/python tools/benchmarks/sam.py --model-type vit_b [--repeats 3] [--json out.json]

Times, alternating the two implementations (ABBA) after warm-up:
- the image encoder on one padded (1, 3, img_size, img_size) input (1024 for B / L / H);
- the prompt path (prompt encoder + mask decoder on a set image embedding) per prompt: one
  point prompt alone, and a batch of 64 point prompts (the automatic generator's batch) / 64.
Weights are random (the release's classes built at the config's sizes, our state dict copied
in strictly), which does not change the cost. Prints the machine (CPU model and flags, threads,
torch), a markdown table and the largest output difference. On a shared machine single runs are
noisy: each speedup is the median over the ABBA pairs of the ratio within the pair (the two runs
of a pair are adjacent in time and see about the same load), for wall and for CPU time (CPU
time is not inflated while other jobs hold the cores).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from vitdet.device import cpu_flags, cpu_model
from vitdet.modeling import onednn
from vitdet.sam import build_sam
from vitdet.sam.build import MODEL_TYPES

SHOWN_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
PROMPT_BATCH = 64


def release_like(ours) -> Sam:
    """The release's ``Sam`` at the sizes of our model, with our weights (strict)."""
    enc, pe, dec = ours.image_encoder, ours.prompt_encoder, ours.mask_decoder
    block = enc.blocks[0]
    windows = [b.attn.window_size for b in enc.blocks]
    embed_dim = enc.patch_embed.proj.out_channels
    transformer = dec.transformer
    ref = Sam(
        image_encoder=ImageEncoderViT(
            img_size=enc.img_size,
            patch_size=enc.patch_embed.patch_size,
            embed_dim=embed_dim,
            depth=len(enc.blocks),
            num_heads=block.attn.num_heads,
            mlp_ratio=block.mlp.lin1.out_features / embed_dim,
            out_chans=enc.neck[0].out_channels,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=block.norm1.eps),
            use_rel_pos=True,
            window_size=max(windows),
            global_attn_indexes=tuple(i for i, w in enumerate(windows) if w == 0),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=pe.embed_dim,
            image_embedding_size=pe.image_embedding_size,
            input_image_size=pe.input_image_size,
            mask_in_chans=pe.mask_downscaling[3].out_channels,
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=dec.transformer_dim,
            transformer=TwoWayTransformer(
                depth=len(transformer.layers),
                embedding_dim=dec.transformer_dim,
                num_heads=transformer.layers[0].self_attn.num_heads,
                mlp_dim=transformer.layers[0].mlp.lin1.out_features,
            ),
            num_multimask_outputs=dec.num_multimask_outputs,
            iou_head_depth=len(dec.iou_prediction_head.layers),
            iou_head_hidden_dim=dec.iou_prediction_head.layers[0].out_features,
        ),
    )
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ref.eval()


def time_alternating(
    runs: dict[str, Callable[[], object]], repeats: int, warmup: int
) -> tuple[dict[str, dict[str, list[float]]], dict[str, object]]:
    """Wall and CPU seconds of each run ({name: {"wall": [...], "cpu": [...]}}), alternating
    (ABBA) after ``warmup`` rounds; the last outputs."""
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in runs}
    outputs = {}
    order = list(runs)
    for i in range(warmup + repeats):
        for name in order if i % 2 == 0 else order[::-1]:
            wall, cpu = time.perf_counter(), time.process_time()
            outputs[name] = runs[name]()
            if i >= warmup:
                times[name]["wall"].append(time.perf_counter() - wall)
                times[name]["cpu"].append(time.process_time() - cpu)
    return times, outputs


def pair_speedup(ref: list[float], ours: list[float]) -> float:
    """Median over the alternated pairs of ref / ours."""
    return statistics.median(r / o for r, o in zip(ref, ours, strict=True))


def prompt_path(model, embedding: torch.Tensor, coords: torch.Tensor) -> Callable[[], object]:
    """Prompt encoder + mask decoder for B point prompts, multimask (the predictor's path)."""
    labels = torch.ones(coords.shape[:2], dtype=torch.int)

    def run():
        sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        return model.mask_decoder(
            image_embeddings=embedding,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )[0]

    return run


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "flags": " ".join(f for f in SHOWN_FLAGS if f in cpu_flags()) or "-",
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onednn_linear": onednn.is_available() and onednn.is_enabled(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_start": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-type", default="vit_b", choices=MODEL_TYPES)
    parser.add_argument("--repeats", type=int, default=3, help="timed encoder runs each")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--prompt-repeats", type=int, default=20, help="timed prompt runs each")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument(
        "--tasks", nargs="+", default=["encoder", "prompt"], choices=["encoder", "prompt"]
    )
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    print(
        f"CPU: {info['cpu']} ({info['cores']} cores; flags: {info['flags']}); "
        f"threads: {info['threads']}; torch {info['torch']}; oneDNN linear: "
        f"{info['onednn_linear']}; load average {info['load_average_start']}",
        flush=True,
    )
    torch.manual_seed(0)
    ours = build_sam(args.model_type)
    ref = release_like(ours)
    size = ours.image_encoder.img_size
    image = torch.randn(1, 3, size, size)
    rows = []
    with torch.no_grad():
        embedding = ours.image_encoder(image) if "prompt" in args.tasks else None
        if "encoder" in args.tasks:
            times, out = time_alternating(
                {
                    "release": lambda: ref.image_encoder(image),
                    "vitdet": lambda: ours.image_encoder(image),
                },
                args.repeats,
                args.warmup,
            )
            rows.append(("image encoder", times, max_diff(out["release"], out["vitdet"])))
        grid = torch.rand(PROMPT_BATCH, 1, 2) * size
        prompt_tasks = (
            ("prompt path, 1 prompt", grid[:1], 1),
            (f"prompt path, batch of {PROMPT_BATCH}, per prompt", grid, PROMPT_BATCH),
        )
        for name, coords, per in prompt_tasks if "prompt" in args.tasks else ():
            times, out = time_alternating(
                {
                    "release": prompt_path(ref, embedding, coords),
                    "vitdet": prompt_path(ours, embedding, coords),
                },
                args.prompt_repeats,
                max(args.warmup, 2),
            )
            times = {k: {c: [t / per for t in v[c]] for c in v} for k, v in times.items()}
            rows.append((name, times, max_diff(out["release"], out["vitdet"])))

    lines = [
        f"SAM {args.model_type}, {size}x{size}, fp32, {info['threads']} threads, same weights; "
        "median times; speedup: median of the ratios within alternated pairs",
        "",
        "| task | release wall | vitdet wall | speedup (wall) | release CPU | vitdet CPU "
        "| speedup (CPU) | max abs diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    result = {"machine": info, "model_type": args.model_type, "rows": []}
    for name, times, diff in rows:
        cells = []
        for clock in ("wall", "cpu"):
            ref_t = statistics.median(times["release"][clock])
            our_t = statistics.median(times["vitdet"][clock])
            unit, scale = ("s", 1.0) if ref_t > 1 else ("ms", 1e3)
            speedup = pair_speedup(times["release"][clock], times["vitdet"][clock])
            cells += [
                f"{ref_t * scale:.2f} {unit}",
                f"{our_t * scale:.2f} {unit}",
                f"**{speedup:.2f}x**",
            ]
        lines.append(f"| {name} | {' | '.join(cells)} | {diff:.1e} |")
        result["rows"].append(
            {"task": name, "release_s": times["release"], "vitdet_s": times["vitdet"], "diff": diff}
        )
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

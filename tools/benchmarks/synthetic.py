#!/usr/bin/env python
"""Where a training step's time goes, and AP against training time, for the Synthetic config.

    # per-component time of a training step: this config and the released head sizes
    python tools/benchmarks/synthetic.py steps --output-dir output/synthetic_steps
    # ... or this config against itself with other settings, steps alternated
    python tools/benchmarks/synthetic.py steps --output-dir output/steps_fp32 \\
        train.amp.enabled=False --vs model.roi_heads.box_pooler._target_=<class path> --vs ...
    # ... and the top 25 ops of one step of each (torch profiler)
    python tools/benchmarks/synthetic.py steps --output-dir output/steps_profile --profile 25
    # ... at trained weights (a late step: more foreground RoIs than at initialisation)
    python tools/benchmarks/synthetic.py steps --output-dir output/steps_trained \
        train.init_checkpoint=output/synthetic/model_final.pth \
        --vs model.roi_heads.mask_rois_per_image=null
    # ... or another training config: the small SAM, one thread, as its CPU minutes are counted
    OMP_NUM_THREADS=1 python tools/benchmarks/synthetic.py steps --output-dir output/sam_steps \
        --config-file configs/SAM/sam_vit_tiny_synthetic.py --steps 20 --vs train.seed=1
    # train with periodic evaluation; AP-vs-time table, json and plot in the output dir
    python tools/benchmarks/synthetic.py curve --output-dir output/synthetic_curve

Both run through the engine (``setup_run``, ``build_trainer``, the ``Trainer``'s own step), so
what is timed is what ``tools/train_net.py`` runs.

Trailing ``key=value`` arguments override the config, as in tools/train_net.py.
"""

import argparse
import itertools
import json
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable

import torch
from detectron2.config import instantiate
from detectron2.utils.events import EventStorage
from matplotlib.figure import Figure

from vitdet.checkpoint import load_checkpoint
from vitdet.device import cpu_model
from vitdet.engine import build_trainer, evaluation_rows, setup_run, train

CONFIG = "configs/Synthetic/mask_rcnn_vitdet_tiny.py"

# The released ViTDet heads on top of the same backbone: 256-channel pyramid, 2-conv RPN head,
# 4conv1fc box head, 512 sampled RoIs per image, 4-conv mask head trained on every foreground RoI.
RELEASED_HEADS = [
    "model.backbone.out_channels=256",
    "model.proposal_generator.head.in_channels=256",
    "model.proposal_generator.head.conv_dims=[-1,-1]",
    "model.roi_heads.batch_size_per_image=512",
    "model.roi_heads.box_head.input_shape.channels=256",
    "model.roi_heads.box_head.conv_dims=[256,256,256,256]",
    "model.roi_heads.box_head.fc_dims=[1024]",
    "model.roi_heads.box_predictor.input_shape.channels=1024",
    "model.roi_heads.mask_head.input_shape.channels=256",
    "model.roi_heads.mask_head.conv_dims=[256,256,256,256,256]",
    "model.roi_heads.mask_rois_per_image=null",
]

# Timed modules (forward) of a GeneralizedRCNN ("backbone" includes "backbone.net") and of a
# TrainableSam (its decoder passes are the forward's rest: they call predict_masks, no hook);
# those the config's model has.
TIMED_MODULES = (
    "backbone",
    "backbone.net",
    "proposal_generator",
    "roi_heads",
    "roi_heads.box_head",
    "roi_heads.mask_head",
    "image_encoder",
)


def step_timer(cfg) -> Callable[[int], dict[str, float]]:
    """A function running training step ``i`` of ``cfg``'s trainer and returning the CPU seconds
    of each part: forward of the TIMED_MODULES and of the whole model, the optimizer step, and
    the rest of the ``Trainer``'s step (backward, mostly). The same real batch of the training
    loader is used for every step. The model starts from ``train.init_checkpoint`` when it is
    set, as in tools/train_net.py.

    CPU time of this process: with OMP_NUM_THREADS=1 this is the step's time on an idle core
    however busy the (shared) machine is; wall-clock time is not.
    """
    trainer, _ = build_trainer(cfg)
    if cfg.train.init_checkpoint:
        load_checkpoint(trainer.model, cfg.train.init_checkpoint)
    batch = next(iter(instantiate(cfg.dataloader.train)))
    trainer.data_loader = itertools.repeat(batch)  # one micro-batch per step
    model = trainer.model

    step_times: dict[str, float] = defaultdict(float)
    starts: dict[str, float] = {}

    def start(name: str) -> None:
        starts[name] = time.process_time()

    def stop(name: str) -> None:
        step_times[name] += time.process_time() - starts[name]

    names = {name for name, _ in model.named_modules()}
    for name in ("", *(m for m in TIMED_MODULES if m in names)):
        label = name or "forward"
        module = model.get_submodule(name)
        module.register_forward_pre_hook(lambda *_, n=label: start(n))
        module.register_forward_hook(lambda *_, n=label: stop(n))
    trainer.optimizer.register_step_pre_hook(lambda *_: start("optimizer"))
    trainer.optimizer.register_step_post_hook(lambda *_: stop("optimizer"))

    def run(step: int) -> dict[str, float]:
        step_times.clear()
        trainer.iter = step
        with EventStorage(step):
            start("step")
            trainer.run_step()
            stop("step")
        step_times["backward and the rest"] = (
            step_times["step"] - step_times["forward"] - step_times["optimizer"]
        )
        return dict(step_times)

    return run


def run_steps(args) -> None:
    """Time the config against a variant (the released head sizes, or ``--vs`` overrides),
    their steps alternated so that both see the same machine; medians over ``--steps``."""
    variants = (
        {"config": [], "vs": args.vs}
        if args.vs
        else {"config": [], "released_heads": RELEASED_HEADS}
    )
    timers, cfgs = {}, {}
    for variant, extra in variants.items():
        output_dir = os.path.join(args.output_dir, variant)
        overrides = [*args.opts, *extra, "dataloader.train.num_workers=0"]
        overrides.append(f"train.output_dir={output_dir}")
        cfgs[variant] = setup_run(args.config_file, overrides, args=args)
        timers[variant] = step_timer(cfgs[variant])
    history = {variant: defaultdict(list) for variant in variants}
    for step in range(args.steps + 1):  # step 0 warms up and is not counted
        for variant, timer in timers.items():
            for name, seconds in timer(step).items():
                if step > 0:
                    history[variant][name].append(seconds)
    table = {
        variant: {name: statistics.median(values) for name, values in parts.items()}
        for variant, parts in history.items()
    }
    if args.profile:
        # one more step of each variant under torch's profiler: the ops by self CPU time
        for variant, timer in timers.items():
            with torch.profiler.profile() as prof:
                timer(args.steps + 1)
            ops = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile)
            with open(os.path.join(args.output_dir, f"profile_{variant}.txt"), "w") as f:
                f.write(ops)
            print(f"{variant}: one step's top {args.profile} ops\n{ops}")
    for variant, parts in table.items():
        print(variant, json.dumps({k: round(v, 3) for k, v in parts.items()}), flush=True)

    rows = ["| part | " + " | ".join(table) + " |", "|---|" + "---|" * len(table)]
    for part in (*TIMED_MODULES, "forward", "backward and the rest", "optimizer", "step"):
        if any(part not in t for t in table.values()):
            continue
        rows.append(f"| {part} | " + " | ".join(f"{t[part]:.2f} s" for t in table.values()) + " |")
    cfg = cfgs["config"]  # the header describes the config; --vs names what the other changes
    batch = cfg.dataloader.train.total_batch_size
    threads = torch.get_num_threads()
    precision = cfg.train.amp.dtype if cfg.train.amp.enabled else "float32"
    text = f"CPU seconds per training step, batch {batch}, {precision}, {threads} thread(s)"
    if args.vs:
        text += f"; vs: {' '.join(args.vs)}"
    if cfg.train.init_checkpoint:
        text += f"; weights: {cfg.train.init_checkpoint}"
    text += f"; {cpu_model()}\n\n" + "\n".join(rows) + "\n"
    with open(os.path.join(args.output_dir, "steps.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.output_dir, "steps.json"), "w") as f:
        json.dump(table, f, indent=2)
    print(text)


def read_curve(output_dir: str) -> list[dict]:
    """The run's evaluations: iterations done, training wall-clock and CPU minutes (evaluations
    excluded), box and mask AP."""
    return [
        {
            "iteration": int(row["train_iterations"]),
            "train_minutes": row["train_seconds"] / 60,
            "train_cpu_minutes": row.get("train_cpu_seconds", float("nan")) / 60,
            "box_AP": row["bbox/AP"],
            "mask_AP": row.get("segm/AP", float("nan")),
        }
        for row in evaluation_rows(output_dir, "bbox/AP")
    ]


def write_curve(curve: list[dict], output_dir: str) -> str:
    """curve.json, curve.md (table) and curve.png (AP vs training minutes)."""
    with open(os.path.join(output_dir, "curve.json"), "w") as f:
        json.dump(curve, f, indent=2)
    rows = [
        "| iteration | training minutes (wall) | CPU minutes | box AP | mask AP |",
        "|---|---|---|---|---|",
    ]
    rows += [
        f"| {c['iteration']} | {c['train_minutes']:.1f} | {c['train_cpu_minutes']:.1f} "
        f"| {c['box_AP']:.1f} | {c['mask_AP']:.1f} |"
        for c in curve
    ]
    table = "\n".join(rows) + "\n"
    with open(os.path.join(output_dir, "curve.md"), "w") as f:
        f.write(table)

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    minutes = [c["train_minutes"] for c in curve]
    ax.plot(minutes, [c["box_AP"] for c in curve], "o-", label="box AP")
    ax.plot(minutes, [c["mask_AP"] for c in curve], "s-", label="mask AP")
    ax.set_xlabel("training wall-clock minutes (evaluation excluded)")
    ax.set_ylabel("AP on synthetic_val")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, "curve.png"), dpi=120)
    return table


def run_curve(args) -> None:
    overrides = [
        *args.opts,
        f"train.eval_period={args.eval_period}",
        f"train.output_dir={args.output_dir}",
    ]
    train(setup_run(args.config_file, overrides, args=args), resume=False)
    curve = read_curve(args.output_dir)
    print(write_curve(curve, args.output_dir))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("steps", "curve"))
    parser.add_argument("--config-file", default=CONFIG)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--steps", type=int, default=3, help="steps: timed steps of the config")
    parser.add_argument(
        "--vs",
        action="append",
        metavar="KEY=VALUE",
        help="steps: compare with the config under this override (repeatable) instead of the "
        "released heads",
    )
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="steps: top N ops of one more step"
    )
    parser.add_argument("--eval-period", type=int, default=150, help="curve: iterations")
    parser.add_argument("opts", nargs="*", help="config overrides key=value")
    args = parser.parse_intermixed_args()
    {"steps": run_steps, "curve": run_curve}[args.mode](args)


if __name__ == "__main__":
    main()

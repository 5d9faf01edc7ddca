#!/usr/bin/env python
"""Speed and memory of this project's ViTDet against detectron2's reference, side by side.

    python tools/benchmarks/speed.py                 # ViT-B, 1024 px: table + benchmark.json
    python tools/benchmarks/speed.py --size B L --repeats 5 --json out.json
    python tools/benchmarks/speed.py --tiny          # a tiny model: checks the tool, seconds

Both detectors come from ``configs/COCO/mask_rcnn_vitdet_{b,l,h}*.py``; the reference one has
its backbone swapped to ``detectron2.modeling.ViT`` / ``SimpleFeaturePyramid``. The reference
is built with non-zero rel-pos tables and its weights are copied into ours (the state-dict
layouts are identical), so both compute the same function. In one process, runs alternate
(ref, ours, ours, ref, ...); times are wall-clock medians.

- Peak memory. CPU: each task runs once in a fresh subprocess; reported is its peak RSS
  (``VmHWM``) minus its RSS just before the task (model and input already built). CUDA:
  ``torch.cuda.max_memory_allocated`` during the task.
- FLOPs: fvcore's count of the reference backbone's forward. fvcore counts a multiply-add as
  one "flop", so GFLOP/s = 2 * GMAC / s. The same count is used for both implementations (ours
  skips a little of that work: the window padding's qkv and projection rows).
- Ceiling: dense fp32 matmul GFLOP/s measured in the same run, 4096^3 and the model's own
  linear shapes, with torch's default GEMM (``torch.mm``: MKL on x86) and oneDNN's; the best
  is the ceiling.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling.poolers import ROIPooler
from detectron2.utils.logger import setup_logger
from fvcore.nn import FlopCountAnalysis

from vitdet.device import (
    BF16_CPU_FLAGS,
    cpu_flags,
    cpu_model,
    keep_freed_memory,
    release_freed_memory,
    resolve_amp_dtype,
)
from vitdet.modeling import onednn

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {
    "B": "configs/COCO/mask_rcnn_vitdet_b_100ep.py",
    "L": "configs/COCO/mask_rcnn_vitdet_l_100ep.py",
    "H": "configs/COCO/mask_rcnn_vitdet_h_75ep.py",
}
# --tiny: the B config shrunk to a model that runs in milliseconds.
TINY_NET = dict(
    img_size=128, embed_dim=64, depth=4, num_heads=4, window_size=3, global_attn_indexes=(1, 3)
)
IMPLS = ("ref", "ours")
TASKS = (
    "backbone_infer",
    "backbone_train",
    "backbone_train_ckpt",
    "detector_infer",
    "backbone_infer_bf16",
)
# Opt-in (--tasks): ours under torch.compile (inductor, weights frozen), compiled on the warm-up
# run, interleaved with the reference and with our eager backbone ("ours_eager").
OPT_IN_TASKS = ("backbone_infer_compiled",)
MEMORY_TASKS = ("backbone_infer", "backbone_train", "backbone_train_ckpt", "detector_infer")


# --- models ------------------------------------------------------------------------------------


def has_reference() -> bool:
    import detectron2.modeling as d2

    return hasattr(d2, "ViT") and hasattr(d2, "SimpleFeaturePyramid")


def load_config(size: str, tiny: bool):
    cfg = LazyConfig.load(str(REPO / CONFIGS[size]))
    if tiny:
        for key, value in TINY_NET.items():
            setattr(cfg.model.backbone.net, key, value)
        cfg.model.proposal_generator.post_nms_topk = (50, 50)
        cfg.model.roi_heads.box_predictor.test_topk_per_image = 5
    # Score threshold 0: every image sends its 100 detections through the mask head, as a
    # trained model does (random heads would score everything below the usual 0.05).
    cfg.model.roi_heads.box_predictor.test_score_thresh = 0.0
    return cfg


def reference_backbone(backbone):
    """The same backbone config node, on detectron2's reference classes."""
    from detectron2.modeling import SimpleFeaturePyramid, ViT
    from detectron2.modeling.backbone.fpn import LastLevelMaxPool

    net = backbone.net
    keep = (
        "img_size patch_size embed_dim depth num_heads drop_path_rate window_size mlp_ratio "
        "qkv_bias norm_layer use_rel_pos out_feature"
    ).split()
    return L(SimpleFeaturePyramid)(
        net=L(ViT)(
            **{k: net[k] for k in keep},
            rel_pos_zero_init=False,  # exercise the rel-pos term
            window_block_indexes=[i for i in range(net.depth) if i not in net.global_attn_indexes],
        ),
        in_feature=backbone.in_feature,
        out_channels=backbone.out_channels,
        scale_factors=backbone.scale_factors,
        top_block=L(LastLevelMaxPool)(),
        norm="LN",
        square_pad=net.img_size,
    )


def build_detectors(
    size: str, tiny: bool, device: str, impls: tuple[str, ...] = IMPLS
) -> dict[str, torch.nn.Module]:
    """{"ref": ..., "ours": ...}: Mask R-CNN, eval mode, the reference's weights in both."""
    cfg = load_config(size, tiny)
    torch.manual_seed(0)
    models = {}
    if "ours" in impls:
        models["ours"] = instantiate(cfg.model)
    if "ref" in impls:
        cfg.model.backbone = reference_backbone(cfg.model.backbone)
        # detectron2's ViTDet heads: its own channel LayerNorm ("LN") and RoIAlign (torchvision's)
        cfg.model.roi_heads.box_head.conv_norm = "LN"
        cfg.model.roi_heads.mask_head.conv_norm = "LN"
        cfg.model.roi_heads.box_pooler._target_ = ROIPooler
        cfg.model.roi_heads.mask_pooler._target_ = ROIPooler
        models["ref"] = instantiate(cfg.model)
        if "ours" in models:
            models["ours"].load_state_dict(models["ref"].state_dict())  # identical layouts
    return {impl: model.to(device).eval() for impl, model in models.items()}


# --- tasks -------------------------------------------------------------------------------------


def compiled(module: torch.nn.Module) -> Callable:
    """``torch.compile`` for inference: inductor with frozen weights (constant-folded, the
    linear layers on oneDNN, as eager's)."""
    torch._inductor.config.freezing = True
    return torch.compile(module)


def make_task(
    task: str, model: torch.nn.Module, image_size: int, device: str, compile_ours: bool = False
) -> Callable:
    """A closure running ``task`` once on ``model`` (a detector); returns its output.
    ``compile_ours``: the model is ours and the task compiles it."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, image_size, image_size, generator=gen).to(device)
    backbone = model.backbone
    if task in ("backbone_infer", "backbone_infer_bf16", "backbone_infer_compiled"):
        dtype = torch.bfloat16 if task.endswith("bf16") else None
        if task.endswith("compiled") and compile_ours:
            backbone = compiled(backbone)

        def run():
            with torch.no_grad(), torch.autocast(device, torch.bfloat16, enabled=dtype is not None):
                return {k: v.float() for k, v in backbone(x).items()}

        return run
    if task == "detector_infer":
        image = (torch.rand(3, image_size, image_size, generator=gen) * 255).to(device)
        inputs = [{"image": image, "height": image_size, "width": image_size}]

        def run():
            with torch.no_grad():
                return model(inputs)[0]["instances"]

        return run
    if task in ("backbone_train", "backbone_train_ckpt"):

        def run():
            backbone.train()
            backbone.zero_grad(set_to_none=True)
            backbone.net.use_act_checkpoint = task.endswith("ckpt")
            torch.manual_seed(2)  # the same drop-path masks in both implementations
            loss = sum(f.square().mean() for f in backbone(x).values())
            loss.backward()
            backbone.net.use_act_checkpoint = False
            backbone.eval()
            return loss.detach()

        return run
    raise ValueError(f"unknown task {task}")


def supports(impl: str, task: str) -> bool:
    # The reference's activation checkpointing needs fairscale; ours is built in.
    return not (impl == "ref" and task == "backbone_train_ckpt")


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def max_abs_diff(task: str, ours, ref) -> dict[str, float] | float | None:
    if task.startswith("backbone_infer"):
        return {k: (ours[k] - ref[k]).abs().max().item() for k in ref}
    if task == "backbone_train":
        return abs(ours.item() - ref.item())  # loss
    if task == "detector_infer":
        if len(ours) != len(ref):
            return None
        return max(
            (ours.pred_boxes.tensor - ref.pred_boxes.tensor).abs().max().item(),
            (ours.scores - ref.scores).abs().max().item(),
        )
    return None


def time_alternating(runs: dict[str, Callable], repeats: int, warmup: int, device: str):
    """Wall and CPU seconds of each run, and of those the kernel's ("sys") with the page faults
    it served ("faults"), alternating ref / ours (ABBA), after ``warmup``."""
    times = {impl: {"wall": [], "cpu": [], "sys": [], "faults": []} for impl in runs}
    outputs = {}
    order = list(runs)
    for i in range(warmup + repeats):
        for impl in order if i % 2 == 0 else order[::-1]:
            sync(device)
            wall, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
            outputs[impl] = runs[impl]()
            sync(device)
            after = resource.getrusage(resource.RUSAGE_SELF)
            if i >= warmup:
                kernel = after.ru_stime - before.ru_stime
                times[impl]["wall"].append(time.perf_counter() - wall)
                times[impl]["cpu"].append(after.ru_utime - before.ru_utime + kernel)
                times[impl]["sys"].append(kernel)
                times[impl]["faults"].append(after.ru_minflt - before.ru_minflt)
    return times, outputs


# --- memory ------------------------------------------------------------------------------------


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def probe_memory(args) -> None:
    """Child process: run one task once, print {"peak_mb": ...} (peak RSS above the start)."""
    torch.set_num_threads(args.threads)
    impl = args.probe_impl
    model = build_detectors(args.size[0], args.tiny, args.device, impls=(impl,))[impl]
    run = make_task(args.probe_task, model, args.image_size, args.device)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        run()
        peak = (torch.cuda.max_memory_allocated() - start) / 2**20
    else:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
        start = rss_mb("VmRSS")
        run()
        peak = rss_mb("VmHWM") - start
    print(json.dumps({"peak_mb": peak}))


def measure_memory(args, size: str, task: str, impl: str) -> float | str:
    """Peak MB of ``task`` in a fresh process, or why there is none (e.g. killed: out of memory)."""
    cmd = [sys.executable, __file__, "--probe-task", task, "--probe-impl", impl]
    cmd += ["--size", size, "--image-size", str(args.image_size), "--threads", str(args.threads)]
    cmd += ["--device", args.device] + (["--tiny"] if args.tiny else [])
    cmd += ["--keep-freed-memory"] if args.keep_freed_memory else []
    release_freed_memory()  # the probe needs the RAM this process kept
    probe = subprocess.run(cmd, capture_output=True, text=True)
    if probe.returncode:
        return f"probe failed (exit {probe.returncode}; -9: killed, e.g. out of memory)"
    return json.loads(probe.stdout.strip().splitlines()[-1])["peak_mb"]


# --- ceiling and FLOPs -------------------------------------------------------------------------


def matmul_gflops(shapes: list[tuple[int, int, int]], device: str) -> dict[str, float]:
    """Best-of-3 GFLOP/s of (M, K) @ (K, N) per kernel and shape."""
    kernels = {"torch.mm": lambda a, b_t: a @ b_t.t()}
    if device == "cpu" and onednn.is_available():
        kernels["onednn"] = onednn.matmul
    results = {}
    for m, k, n in shapes:
        a, b_t = torch.randn(m, k, device=device), torch.randn(n, k, device=device)
        for name, kernel in kernels.items():
            kernel(a, b_t)
            best = float("inf")
            for _ in range(3):
                sync(device)
                start = time.perf_counter()
                kernel(a, b_t)
                sync(device)
                best = min(best, time.perf_counter() - start)
            results[f"{name} {m}x{k}x{n}"] = 2 * m * k * n / best / 1e9
    return results


def backbone_gmac(backbone: torch.nn.Module, image_size: int, device: str) -> float:
    x = torch.randn(1, 3, image_size, image_size, device=device)
    with torch.no_grad():
        count = FlopCountAnalysis(backbone, x)
        count.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return count.total() / 1e9


# --- report ------------------------------------------------------------------------------------


def machine_info(args) -> dict:
    bf16 = resolve_amp_dtype("auto", "cpu")
    info = {
        "cpu": cpu_model(),
        "cpu_bf16": sorted(set(BF16_CPU_FLAGS) & cpu_flags()) or "none (emulated)",
        "auto_precision": f"{bf16.name} ({bf16.reason})",
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": args.device,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_start": os.getloadavg(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(default)"),
        "malloc": "freed memory kept" if args.keep_freed_memory else "glibc default",
        # ours: whose GEMMs the linear layers' training uses (CPU-dependent, vitdet.modeling.onednn)
        "training_gemms": "oneDNN" if onednn.trains_on_onednn() else "MKL (torch's default)",
    }
    if args.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def fmt_diff(diff) -> str:
    if diff is None:
        return "n/a"
    if isinstance(diff, dict):
        return f"{max(diff.values()):.1e}"
    return f"{diff:.1e}"


HEADER = [
    "| size | task | ref s | ours s | speedup | ref peak MB | ours peak MB | mem ratio "
    "| max abs diff | ref GFLOP/s | ours GFLOP/s |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
]


def table_row(row: dict) -> str:
    ref, ours = row["ref"], row["ours"]

    def cell(x, spec):
        return "-" if x is None else format(x, spec)

    speedup = ref["median_s"] / ours["median_s"] if ref["median_s"] else None
    mem = ours["peak_mb"] / ref["peak_mb"] if ref["peak_mb"] and ours["peak_mb"] else None
    return (
        f"| {row['size']} | {row['task']} | {cell(ref['median_s'], '.2f')} "
        f"| {cell(ours['median_s'], '.2f')} | {cell(speedup, '.2f')}x "
        f"| {cell(ref['peak_mb'], '.0f')} | {cell(ours['peak_mb'], '.0f')} "
        f"| {cell(mem, '.2f')} | {fmt_diff(row['max_abs_diff'])} "
        f"| {cell(ref.get('gflops'), '.0f')} | {cell(ours.get('gflops'), '.0f')} |"
    )


def markdown(result: dict) -> str:
    lines = HEADER + [table_row(row) for row in result["rows"]]
    ceiling = result["ceiling"]
    lines.append("")
    lines.append(
        f"Dense fp32 matmul ceiling: {ceiling['best_gflops']:.0f} GFLOP/s ({ceiling['best']}); "
        + ", ".join(f"{k}: {v:.0f}" for k, v in ceiling["gflops"].items())
    )
    for row in result["rows"]:
        if row["ours"].get("gflops"):
            lines.append(
                f"{row['size']} {row['task']}: {row['gmac']:.0f} GMAC (fvcore); ours at "
                f"{row['ours']['gflops'] / ceiling['best_gflops']:.0%} of the ceiling, "
                f"the reference at {row['ref']['gflops'] / ceiling['best_gflops']:.0%}"
            )
    for row in result["rows"]:
        if row["ours"].get("sys_s"):
            lines.append(
                f"{row['size']} {row['task']}: in the kernel (medians) "
                + ", ".join(
                    f"{impl} {statistics.median(row[impl]['sys_s']):.2f} s with "
                    f"{statistics.median(row[impl]['page_faults']):.0f} page faults"
                    for impl in IMPLS
                    if row[impl].get("sys_s")
                )
            )
    for row in result["rows"]:
        if "ours_eager" in row:
            eager, compiled_s = row["ours_eager"]["median_s"], row["ours"]["median_s"]
            lines.append(
                f"{row['size']} torch.compile vs eager (ours, interleaved): {compiled_s:.2f} s vs "
                f"{eager:.2f} s, {eager / compiled_s:.2f}x"
            )
    m = result["machine"]
    lines.append(
        f"Machine: {m['cpu']}, native bf16: {m['cpu_bf16']}, {m['cores']} cores, "
        f"{m['threads']} threads, torch {m['torch']}, "
        f"{m['device']}, {m['date']}, load average at start {m['load_average_start'][0]:.1f}, "
        f"malloc: {m['malloc']}, our training GEMMs: {m['training_gemms']}"
    )
    return "\n".join(lines)


def benchmark_size(args, size: str, tasks: list[str], save: Callable) -> list[dict]:
    detectors = build_detectors(size, args.tiny, args.device)
    gmac = backbone_gmac(detectors["ref"].backbone, args.image_size, args.device)
    rows = []
    for task in tasks:
        impls = [impl for impl in IMPLS if supports(impl, task)]
        where = (args.image_size, args.device)
        runs = {
            impl: make_task(task, detectors[impl], *where, compile_ours=impl == "ours")
            for impl in impls
        }
        if task == "backbone_infer_compiled":  # our eager model, interleaved in the same run
            runs["ours_eager"] = make_task("backbone_infer", detectors["ours"], *where)
        training = task.startswith("backbone_train")
        times, outputs = time_alternating(
            runs,
            repeats=args.train_repeats if training else args.repeats,
            warmup=0 if training else 1,
            device=args.device,
        )
        row = {"size": size, "task": task, "gmac": gmac, "max_abs_diff": None}
        if "ref" in outputs:
            row["max_abs_diff"] = max_abs_diff(task, outputs["ours"], outputs["ref"])
        if task == "backbone_infer_bf16":
            fp32 = make_task("backbone_infer", detectors["ref"], args.image_size, args.device)()
            row["max_abs_diff_vs_fp32_reference"] = {
                impl: max_abs_diff("backbone_infer", outputs[impl], fp32) for impl in impls
            }
        for impl in (*IMPLS, "ours_eager") if "ours_eager" in times else IMPLS:
            entry = {"median_s": None, "wall_s": [], "cpu_s": [], "peak_mb": None}
            if impl in times:
                entry.update(
                    wall_s=times[impl]["wall"],
                    cpu_s=times[impl]["cpu"],
                    sys_s=times[impl]["sys"],
                    page_faults=times[impl]["faults"],
                )
                entry["median_s"] = statistics.median(times[impl]["wall"])
                if task in ("backbone_infer", "backbone_infer_compiled"):
                    entry["gflops"] = 2 * gmac / entry["median_s"]
            row[impl] = entry
        rows.append(row)
        save(rows)  # a partial report survives a crash or an out-of-memory kill
        for impl in times if args.memory and task in MEMORY_TASKS else ():
            peak = measure_memory(args, size, task, impl)
            if isinstance(peak, str):
                row[impl]["peak_error"] = peak
            else:
                row[impl]["peak_mb"] = peak
        save(rows)
        print(table_row(row), flush=True)
        del runs, outputs
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", nargs="+", default=["B"], choices=sorted(CONFIGS))
    parser.add_argument("--image-size", type=int, default=None, help="default 1024 (128 tiny)")
    parser.add_argument("--repeats", type=int, default=3, help="timed inference runs each")
    parser.add_argument("--train-repeats", type=int, default=2, help="timed training steps each")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS + OPT_IN_TASKS)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default="benchmark.json", help="output file")
    parser.add_argument("--no-memory", dest="memory", action="store_false")
    parser.add_argument("--tiny", action="store_true", help="tiny model: checks the tool only")
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="glibc's malloc keeps freed memory (train.keep_freed_memory=True) instead of its "
        "default, for both implementations",
    )
    parser.add_argument("--probe-task", help=argparse.SUPPRESS)
    parser.add_argument("--probe-impl", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.image_size = args.image_size or (TINY_NET["img_size"] if args.tiny else 1024)
    if args.keep_freed_memory and args.device == "cpu":
        keep_freed_memory()
    if args.probe_task:
        probe_memory(args)
        return
    if not has_reference():
        sys.exit("the installed detectron2 has no reference ViT / SimpleFeaturePyramid")
    setup_logger(name="fvcore")
    torch.set_num_threads(args.threads)

    machine = machine_info(args)
    net = load_config(args.size[0], args.tiny).model.backbone.net
    tokens = (args.image_size // net.patch_size) ** 2
    dim = net.embed_dim
    shapes = [(4096, 4096, 4096), (tokens, dim, 3 * dim), (tokens, dim, 4 * dim)]
    gflops = matmul_gflops(shapes if not args.tiny else shapes[1:], args.device)
    print("\n".join(HEADER), flush=True)

    def save(rows: list[dict]) -> dict:
        best = max(gflops, key=gflops.get)
        ceiling = {"gflops": gflops, "best": best, "best_gflops": gflops[best]}
        machine["load_average_end"] = os.getloadavg()
        result = {"machine": machine, "ceiling": ceiling, "rows": rows, "args": vars(args)}
        Path(args.json).write_text(json.dumps(result, indent=1))
        return result

    rows = []
    for size in args.size:
        done = list(rows)
        rows += benchmark_size(args, size, args.tasks, lambda new, done=done: save(done + new))
    # the ceiling again after the runs: the best of both is the machine's peak
    after = matmul_gflops(shapes if not args.tiny else shapes[1:], args.device)
    gflops = {k: max(v, after[k]) for k, v in gflops.items()}
    result = save(rows)
    print()
    print(markdown(result))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Does MAE pretraining help? MAE on the synthetic training images (labels unused), then the
Synthetic ViTDet fine-tuned from it, against the same ViTDet from random initialisation with
the same fine-tuning budget.

    python tools/benchmarks/mae.py --output-dir output/benchmark_mae
    python tools/benchmarks/mae.py --output-dir output/benchmark_mae --finetune-iters 300
    python tools/benchmarks/mae.py --output-dir output/b optimizer.lr=4e-4   # both arms

Trailing ``key=value`` arguments override the detector config of both fine-tuning runs.

Steps (each resumes or is skipped when its output is complete, so a rerun continues):
1. the synthetic set under $DETECTRON2_DATASETS/synthetic (generated when absent);
2. tools/pretrain_mae.py with configs/MAE/mae_vit_tiny_synthetic.py -> <out>/mae;
3. tools/train_net.py with configs/Synthetic/mask_rcnn_vitdet_tiny.py twice, at once:
   <out>/finetune_mae (train.init_checkpoint=<out>/mae/model_final.pth) and
   <out>/finetune_scratch (no init_checkpoint);
4. <out>/results.md and results.json: box and mask AP of both on synthetic_val, with the
   iterations each run did (its config as run: <out>/finetune_*/config.yaml).

Every process runs with OMP_NUM_THREADS=1 unless it is set: on a shared CPU one thread per
process is faster than two that wait for each other.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from vitdet.data import synthetic

REPO = Path(__file__).resolve().parents[2]
MAE_CONFIG = "configs/MAE/mae_vit_tiny_synthetic.py"
DETECTOR_CONFIG = "configs/Synthetic/mask_rcnn_vitdet_tiny.py"
ARMS = ("mae", "scratch")
METRICS = ("AP", "AP50", "AP75")


def run(command: list[str], log: Path) -> subprocess.Popen:
    """Start ``command`` in the repository with its output appended to ``log``."""
    print(f"$ {' '.join(command)}  (log: {log})", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with open(log, "a") as f:
        return subprocess.Popen(command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env)


def wait(processes: dict[str, subprocess.Popen]) -> None:
    failed = [name for name, p in processes.items() if p.wait() != 0]
    if failed:
        raise SystemExit(f"benchmarks/mae.py: failed: {', '.join(failed)} (see the logs)")


def pretrain(out: Path, data_root: Path, iters: int | None) -> tuple[Path, float]:
    """MAE checkpoint and pretraining minutes (from the run's own timer)."""
    mae_dir = out / "mae"
    checkpoint = mae_dir / "model_final.pth"
    if not checkpoint.exists():
        mae_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "tools/pretrain_mae.py",
            "--resume",
            "--config-file",
            MAE_CONFIG,
            f"train.output_dir={mae_dir}",
            f"dataloader.train.dataset.root={data_root / 'train'}",
            f"dataloader.test.root={data_root / 'val'}",
        ]
        command += [f"train.max_iter={iters}"] if iters else []
        wait({"pretraining": run(command, mae_dir / "stdout.log")})
    return checkpoint, _train_minutes(mae_dir)


def finetune(
    out: Path, mae_checkpoint: Path, iters: int | None, overrides: list[str]
) -> dict[str, dict]:
    """{arm: eval results} of the two fine-tuning runs, started together."""
    processes = {}
    for arm in ARMS:
        arm_dir = out / f"finetune_{arm}"
        if (arm_dir / "model_final.pth").exists() and (arm_dir / "eval_results.json").exists():
            continue
        arm_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "tools/train_net.py",
            "--resume",
            "--config-file",
            DETECTOR_CONFIG,
            f"train.output_dir={arm_dir}",
        ]
        command += [f"train.init_checkpoint={mae_checkpoint}"] if arm == "mae" else []
        command += [*overrides, *([f"train.max_iter={iters}"] if iters else [])]
        processes[arm] = run(command, arm_dir / "stdout.log")
    wait(processes)
    results = {}
    for arm in ARMS:
        arm_dir = out / f"finetune_{arm}"
        results[arm] = json.loads((arm_dir / "eval_results.json").read_text())
        results[arm]["train_minutes"] = _train_minutes(arm_dir)
        results[arm]["iterations"] = _iterations(arm_dir)
    return results


def _train_minutes(run_dir: Path) -> float:
    """Training wall-clock minutes of a run (evaluations excluded), from its metrics.json."""
    seconds = [
        row["train_seconds"]
        for row in map(json.loads, (run_dir / "metrics.json").read_text().splitlines())
        if "train_seconds" in row
    ]
    return max(seconds, default=float("nan")) / 60


def _iterations(run_dir: Path) -> int:
    """Training iterations a run did, from its metrics.json."""
    rows = map(json.loads, (run_dir / "metrics.json").read_text().splitlines())
    return 1 + max(row["iteration"] for row in rows if "total_loss" in row)


def last_mae_loss(mae_dir: Path) -> tuple[int, float]:
    """(iteration, masked-patch loss) of the last MAE evaluation."""
    rows = map(json.loads, (mae_dir / "metrics.json").read_text().splitlines())
    evaluations = [(r["iteration"], r["mae_eval/loss"]) for r in rows if "mae_eval/loss" in r]
    return evaluations[-1]


def write_results(out: Path, results: dict, mae_minutes: float) -> str:
    iteration, loss = last_mae_loss(out / "mae")
    pictures = sorted((out / "mae" / "reconstructions").glob("*.png"))
    summary = {
        "mae": {"iterations": iteration, "masked_patch_loss": loss, "train_minutes": mae_minutes},
        "finetune": results,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    header = " | ".join(f"{task} {m}" for task in ("box", "mask") for m in METRICS)
    rows = [
        f"| initialisation | {header} | fine-tuning iterations | minutes |",
        "|---" * (3 + 2 * len(METRICS)) + "|",
    ]
    for arm, label in (("mae", "MAE (this benchmark)"), ("scratch", "random")):
        r = results[arm]
        values = " | ".join(f"{r[task][m]:.1f}" for task in ("bbox", "segm") for m in METRICS)
        rows.append(f"| {label} | {values} | {r['iterations']} | {r['train_minutes']:.0f} |")
    text = (
        f"MAE: {iteration} iterations ({mae_minutes:.0f} min), masked-patch loss {loss:.3f} "
        f"on synthetic_val; last reconstructions: {pictures[-1] if pictures else '-'}\n"
        f"Fine-tuning: the same recipe ({DETECTOR_CONFIG}) for both; AP on synthetic_val "
        "(100 images)\n\n" + "\n".join(rows) + "\n"
    )
    (out / "results.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", required=True, type=Path)
    parser.add_argument("--pretrain-iters", type=int, help="default: the MAE config's")
    parser.add_argument("--finetune-iters", type=int, help="default: the Synthetic config's")
    parser.add_argument("opts", nargs="*", help="detector config overrides key=value")
    args = parser.parse_args()
    out = args.output_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    data_root = Path(os.environ.get("DETECTRON2_DATASETS", "datasets")).resolve() / "synthetic"
    synthetic.generate(data_root)  # returns at once when the set is there and complete
    mae_checkpoint, mae_minutes = pretrain(out, data_root, args.pretrain_iters)
    results = finetune(out, mae_checkpoint, args.finetune_iters, args.opts)
    print(write_results(out, results, mae_minutes))
    print(f"benchmark wall-clock: {(time.perf_counter() - start) / 60:.0f} min")


if __name__ == "__main__":
    main()

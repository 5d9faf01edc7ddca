#!/usr/bin/env python
"""Label-efficient detection from unlabeled images: MAE pretraining on unlabeled synthetic images,
then the Synthetic ViTDet fine-tuned on 10% and on 100% of the labeled training images from the
MAE backbone and from random initialisation, the same fine-tuning iterations for every arm.

    OMP_NUM_THREADS=1 nice -n 19 python tools/benchmarks/mae.py --output-dir output/benchmark_mae
    python tools/benchmarks/mae.py --output-dir output/b --groups main --finetune-iters 300

Stages; each is a tools/ run in its own folder under ``--output-dir`` that is skipped when done
and resumed (``--resume``) when interrupted, so the same command continues a stopped benchmark:

1. data: the labeled synthetic set (``$DETECTRON2_DATASETS/synthetic``, 600 train / 100 val) and
   ``--unlabeled-images`` unlabeled images of another generator seed
   (``$DETECTRON2_DATASETS/synthetic_unlabeled/train``: none is a labeled or validation image);
2. pretraining (tools/pretrain_mae.py): ``mae`` (configs/MAE/mae_vit_tiny_synthetic_unlabeled.py)
   and, for the conv-stem row, ``mae_convstem``, for the budget rows ``mae_long`` (the same
   recipe 7.5x longer, configs/MAE/mae_vit_tiny_synthetic_long.py); and ``supervised``
   (tools/train_net.py): the Synthetic detector trained on the unlabeled pool *with* its labels,
   whose ViT (pyramid and heads new) is the ceiling of what pretraining on those images can give;
3. fine-tuning (tools/train_net.py), ``finetune_<arm>``: the arms of ``ARMS``, in the groups
   ``main`` (MAE / random x 10% / 100% labels), ``sweep`` (at 10%: random init at two more lrs,
   MAE init at one more lr and with the from-scratch recipe; at 100% random init at lr 2e-3),
   ``variants`` (sin-cos positions, conv stem) and ``budget`` (10% / 100% from ``mae_long``,
   at 100% also at lr 1e-3; 10% from ``supervised``); 10% is the dataset
   ``synthetic_train@10%`` (``vitdet.data.subset``).
   Every arm evaluates on synthetic_val every ``--eval-period`` iterations, which gives the curves;
4. ``results.md`` / ``results.json`` (the table, the goal check, CPU minutes) and ``curves.png``
   (box and mask AP against fine-tuning iterations, one line per arm).

At most ``--jobs`` runs at a time, none started twice: a run that another invocation started
and that is still going (its pid in <folder>/harness.pid) is waited for. The processes inherit
this one's niceness; each gets OMP_NUM_THREADS=1 unless set (on a shared CPU one thread per
process is faster than two that wait for each other). When runs fail, the table still holds the
arms that finished. Trailing ``key=value`` arguments override every fine-tuning run's config.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import yaml
from detectron2.config import instantiate
from matplotlib.figure import Figure

from vitdet.config import load_config
from vitdet.data import synthetic
from vitdet.engine import evaluation_rows

REPO = Path(__file__).resolve().parents[2]
SCRATCH_CONFIG = "configs/Synthetic/mask_rcnn_vitdet_tiny.py"
MAE_FT_CONFIG = "configs/Synthetic/mask_rcnn_vitdet_tiny_mae_ft.py"
CONVSTEM_FT_CONFIG = "configs/Synthetic/mask_rcnn_vitdet_tiny_convstem_mae_ft.py"
GROUPS = ("main", "sweep", "variants", "budget")
GOAL_GAIN = 5.0  # box AP the MAE arm must gain over random initialisation at 10% labels


@dataclass(frozen=True)
class Pretraining:
    name: str  # folder under --output-dir
    config: str
    # False: MAE (tools/pretrain_mae.py) on the unlabeled images; True: the detector trained
    # (tools/train_net.py) on the same images with their labels, whose ViT alone is kept.
    supervised: bool = False

    def init_file(self, out: Path) -> Path:
        """The fine-tuning's train.init_checkpoint."""
        name = "backbone_init.pth" if self.supervised else "model_final.pth"
        return out / self.name / name


@dataclass(frozen=True)
class Arm:
    name: str  # folder finetune_<name> under --output-dir
    label: str  # its row in the table
    group: str  # one of GROUPS
    config: str
    percent: int  # of the labeled training images
    pretraining: str | None = None  # Pretraining.name whose model_final.pth initialises it
    overrides: tuple[str, ...] = ()

    @property
    def init(self) -> str:
        if self.pretraining is None:
            return "random"
        return "supervised" if PRETRAININGS_BY_NAME[self.pretraining].supervised else "MAE"


PRETRAININGS = (
    Pretraining("mae", "configs/MAE/mae_vit_tiny_synthetic_unlabeled.py"),
    Pretraining("mae_convstem", "configs/MAE/mae_vit_tiny_synthetic_convstem.py"),
    Pretraining("mae_long", "configs/MAE/mae_vit_tiny_synthetic_long.py"),
    Pretraining("supervised", SCRATCH_CONFIG, supervised=True),
)
PRETRAININGS_BY_NAME = {pre.name: pre for pre in PRETRAININGS}
UNLABELED_TRAIN = "synthetic_unlabeled_train"  # the unlabeled pool, registered with its labels
# In priority order: runs start in this order as the job slots free up (the conv-stem row before
# the sin-cos one: its pretraining then runs beside other arms, not alone at the end).
ARMS = (
    Arm("random_10", "random init, from-scratch recipe", "main", SCRATCH_CONFIG, 10),
    Arm("mae_10", "MAE init, fine-tuning recipe", "main", MAE_FT_CONFIG, 10, "mae"),
    Arm("random_100", "random init, from-scratch recipe", "main", SCRATCH_CONFIG, 100),
    Arm("mae_100", "MAE init, fine-tuning recipe", "main", MAE_FT_CONFIG, 100, "mae"),
    Arm(
        "random_10_lr5e-4",
        "random init, from-scratch recipe, lr 5e-4",
        "sweep",
        SCRATCH_CONFIG,
        10,
        overrides=("optimizer.lr=5e-4",),
    ),
    Arm(
        "random_10_lr2e-3",
        "random init, from-scratch recipe, lr 2e-3",
        "sweep",
        SCRATCH_CONFIG,
        10,
        overrides=("optimizer.lr=2e-3",),
    ),
    Arm(
        "mae_10_lr1e-3",
        "MAE init, fine-tuning recipe, lr 1e-3",
        "sweep",
        MAE_FT_CONFIG,
        10,
        "mae",
        ("optimizer.lr=1e-3",),
    ),
    Arm(
        "random_100_lr2e-3",
        "random init, from-scratch recipe, lr 2e-3",
        "sweep",
        SCRATCH_CONFIG,
        100,
        overrides=("optimizer.lr=2e-3",),
    ),
    Arm(
        "mae_10_scratch_recipe",
        "MAE init, from-scratch recipe (lr 1e-3, no layer decay)",
        "sweep",
        SCRATCH_CONFIG,
        10,
        "mae",
    ),
    Arm(
        "mae_convstem_10",
        "MAE init (conv-stem pretraining), conv stem",
        "variants",
        CONVSTEM_FT_CONFIG,
        10,
        "mae_convstem",
    ),
    Arm(
        "mae_sincos_10",
        "MAE init, fixed sin-cos positions",
        "variants",
        MAE_FT_CONFIG,
        10,
        "mae",
        ("model.backbone.net.pos_embed_type=sincos",),
    ),
    # The pretraining budget: the 60 CPU minutes instead of 7, with the 10% arm's best
    # fine-tuning lr (1e-3) and the recipe's default (5e-4) at 100%.
    Arm(
        "mae_long_10",
        "MAE init (7.5x longer pretraining), fine-tuning recipe, lr 1e-3",
        "budget",
        MAE_FT_CONFIG,
        10,
        "mae_long",
        ("optimizer.lr=1e-3",),
    ),
    Arm(
        "mae_long_100",
        "MAE init (7.5x longer pretraining), fine-tuning recipe",
        "budget",
        MAE_FT_CONFIG,
        100,
        "mae_long",
    ),
    Arm(
        "mae_long_100_lr1e-3",
        "MAE init (7.5x longer pretraining), fine-tuning recipe, lr 1e-3",
        "budget",
        MAE_FT_CONFIG,
        100,
        "mae_long",
        ("optimizer.lr=1e-3",),
    ),
    # What any pretraining on the unlabeled pool could give the backbone: the Synthetic detector
    # trained on those images with their labels (1500 it), its ViT kept, the pyramid and the
    # heads new, fine-tuned as the MAE arms are.
    Arm(
        "supervised_10",
        "supervised ViT (the pool's labels: a ceiling), fine-tuning recipe, lr 1e-3",
        "budget",
        MAE_FT_CONFIG,
        10,
        "supervised",
        ("optimizer.lr=1e-3",),
    ),
)


@dataclass
class Job:
    """One tool run: its folder, its command, whether it is complete, what it waits for."""

    name: str
    folder: Path
    command: list[str]
    done: Callable[[], bool]
    after: tuple[str, ...] = ()
    prepare: Callable[[], None] | None = None  # run here before the command starts


def finished(folder: Path, max_iter: int) -> bool:
    """The run wrote its final checkpoint and evaluated after its last iteration."""
    rows = evaluation_rows(folder, "bbox/AP", "mae_eval/loss")
    return (folder / "model_final.pth").is_file() and any(
        r.get("train_iterations") == max_iter for r in rows
    )


def backbone_init(trained: Path, dst: Path, config: str) -> None:
    """A fine-tuning init from a trained detector: its ViT (``backbone.net.*``) with the pyramid
    and heads of ``config``'s detector freshly built (seed 0), one file that loads strictly."""
    torch.manual_seed(0)
    state = instantiate(load_config(REPO / config).model).state_dict()
    weights = torch.load(trained, map_location="cpu", weights_only=True)["model"]
    vit = {k: v for k, v in weights.items() if k.startswith("backbone.net.")}
    if not vit or set(vit) - set(state):
        raise ValueError(f"{trained}: not a checkpoint of {config}'s detector")
    state.update(vit)
    tmp = dst.with_suffix(".tmp")
    torch.save({"model": state}, tmp)
    tmp.replace(dst)


def pretraining_job(out: Path, pre: Pretraining, datasets: Path) -> Job:
    """The run of one pretraining: MAE on the unlabeled images, or (supervised) the detector
    on the same images with their labels."""
    folder = out / pre.name
    tool, data = "tools/pretrain_mae.py", []
    if pre.supervised:
        pool = datasets / "synthetic_unlabeled"
        tool = "tools/train_net.py"
        data = ["--register-coco", UNLABELED_TRAIN,
                str(pool / "annotations" / "instances_train.json"), str(pool / "train"),
                f"dataloader.train.dataset.names={UNLABELED_TRAIN}",
                # the schedule docs/MAE.md measured (the Synthetic config's before issue 14
                # shortened it to 1100 iterations), with its 100 warm-up iterations
                "train.max_iter=1500", f"lr_multiplier.warmup_length={100 / 1500}"]  # fmt: skip
    command = [sys.executable, tool, "--resume", "--config-file", pre.config, *data]
    command += [f"train.output_dir={folder}"]
    return Job(pre.name, folder, command, lambda: (folder / "model_final.pth").is_file())


def build_jobs(
    out: Path,
    arms: Sequence[Arm],
    *,
    finetune_iters: int,
    eval_period: int,
    opts: Sequence[str],
    datasets: Path = Path("datasets"),
) -> list[Job]:
    """The arms' runs in ARMS order (the start priority), each pretraining just before the first
    arm that needs it, each with its tool command."""
    python = sys.executable
    jobs = []
    # The from-scratch warm-up of 100 iterations, as a fraction of the fine-tuning schedule.
    schedule = [
        f"train.max_iter={finetune_iters}",
        f"lr_multiplier.warmup_length={100 / finetune_iters}",
        f"train.eval_period={eval_period}",
        f"train.checkpointer.period={eval_period}",
    ]
    for arm in arms:
        pre = PRETRAININGS_BY_NAME.get(arm.pretraining)
        if pre is not None and pre.name not in {job.name for job in jobs}:
            jobs.append(pretraining_job(out, pre, datasets))
        folder = out / f"finetune_{arm.name}"
        command = [python, "tools/train_net.py", "--resume", "--config-file", arm.config]
        command += [f"train.output_dir={folder}"]
        if arm.percent != 100:
            command += [f"dataloader.train.dataset.names=synthetic_train@{arm.percent}%"]
        prepare = None
        if pre is not None:
            command += [f"train.init_checkpoint={pre.init_file(out)}"]
            if pre.supervised:
                trained = out / pre.name / "model_final.pth"
                prepare = partial(backbone_init, trained, pre.init_file(out), arm.config)
        command += [*schedule, *arm.overrides, *opts]
        after = () if pre is None else (pre.name,)
        done = lambda f=folder: finished(f, finetune_iters)  # noqa: E731
        jobs.append(Job(arm.name, folder, command, done, after, prepare))
    return jobs


def arm_jobs(jobs: Sequence[Job], arms: Sequence[Arm]) -> list[Job]:
    """The fine-tuning job of each arm, in the order of ``arms``."""
    by_name = {job.name: job for job in jobs}
    return [by_name[arm.name] for arm in arms]


def start(job: Job) -> subprocess.Popen:
    """Start ``job`` in the repository with its output appended to <folder>/stdout.log."""
    job.folder.mkdir(parents=True, exist_ok=True)
    if job.prepare is not None:
        job.prepare()
    log = job.folder / "stdout.log"
    print(f"$ {' '.join(job.command)}  (log: {log})", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with open(log, "a") as f:
        process = subprocess.Popen(
            job.command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env
        )
    (job.folder / "harness.pid").write_text(str(process.pid))
    return process


class RunningElsewhere:
    """A run another invocation of this tool started and that is still going (its pid in
    <folder>/harness.pid is alive and runs on that folder): waited for, not started twice."""

    def __init__(self, pid: int) -> None:
        self.pid, self.returncode = pid, None

    @staticmethod
    def find(job: Job) -> "RunningElsewhere | None":
        path = job.folder / "harness.pid"
        if not path.is_file():
            return None
        pid = int(path.read_text())
        return RunningElsewhere(pid) if str(job.folder) in _command_line(pid) else None

    def poll(self) -> int | None:
        if self.returncode is None and not _command_line(self.pid):  # gone, or a zombie
            self.returncode = 0  # not our child: whether it finished is job.done()'s answer
        return self.returncode


def _command_line(pid: int) -> str:
    """The command line of process ``pid``; empty when it is gone or has exited (a zombie)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def run_jobs(
    jobs: Sequence[Job],
    *,
    max_jobs: int,
    launch: Callable[[Job], subprocess.Popen] = start,
    poll_seconds: float = 10.0,
) -> list[str]:
    """Run the jobs that are not done, at most ``max_jobs`` at a time, each after the jobs it
    waits for; returns the names of those started. Raises SystemExit naming failed runs."""
    pending = [job for job in jobs if not job.done()]
    done = {job.name for job in jobs if job not in pending}
    running: dict[str, subprocess.Popen] = {}
    started, failed = [], []
    while pending or running:
        for job in list(pending):
            if len(running) >= max_jobs:
                break
            if all(name in done for name in job.after):
                elsewhere = RunningElsewhere.find(job)
                running[job.name] = elsewhere or launch(job)
                started += [] if elsewhere else [job.name]
                pending.remove(job)
        if not running:  # what is left waits for a failed run
            break
        time.sleep(poll_seconds)
        for name, process in list(running.items()):
            if process.poll() is None:
                continue
            del running[name]
            job = next(j for j in jobs if j.name == name)
            if process.returncode == 0 and job.done():
                done.add(name)
            else:
                failed.append(name)
    if failed or pending:
        skipped = [job.name for job in pending]
        raise SystemExit(
            f"benchmarks/mae.py: failed: {', '.join(failed)}; not run: {', '.join(skipped)} "
            "(see each folder's stdout.log; rerun the same command to resume)"
        )
    return started


def arm_results(out: Path, arm: Arm) -> dict:
    """Final and per-evaluation AP of an arm, its recipe values and CPU minutes."""
    rows = evaluation_rows(out / f"finetune_{arm.name}", "bbox/AP")
    final = rows[-1]
    return {
        "name": arm.name,
        "label": arm.label,
        "group": arm.group,
        "init": arm.init,
        "percent": arm.percent,
        "recipe": recipe(out / f"finetune_{arm.name}"),
        "box": {m: final[f"bbox/{m}"] for m in ("AP", "AP50", "AP75")},
        "mask": {m: final[f"segm/{m}"] for m in ("AP", "AP50", "AP75")},
        "curve": [
            {"iteration": int(r["train_iterations"]), "box": r["bbox/AP"], "mask": r["segm/AP"]}
            for r in rows
        ],
        "cpu_minutes": final["train_cpu_seconds"] / 60,
    }


class _ConfigYamlLoader(yaml.SafeLoader):
    """Reads a run's config.yaml with the Python objects it names (``functools.partial`` of a
    norm layer) as None: only numbers are wanted here, and nothing is constructed."""


_ConfigYamlLoader.add_multi_constructor("tag:yaml.org,2002:python/", lambda *_: None)


def recipe(folder: Path) -> dict:
    """lr, layer-wise lr decay and drop path of a run, from its config.yaml."""
    cfg = yaml.load((folder / "config.yaml").read_text(), Loader=_ConfigYamlLoader)
    return {
        "lr": cfg["optimizer"]["lr"],
        "lr_decay": cfg["optimizer"]["params"]["lr_decay_rate"],
        "drop_path": cfg["model"]["backbone"]["net"]["drop_path_rate"],
    }


def pretraining_results(folder: Path, pre: Pretraining) -> dict:
    """At each evaluation the masked-patch loss on the validation crops (MAE) or the box AP on
    synthetic_val (supervised); CPU minutes."""
    metric = "bbox/AP" if pre.supervised else "mae_eval/loss"
    rows = evaluation_rows(folder, metric)
    pictures = sorted((folder / "reconstructions").glob("*.png"))
    return {
        "iterations": int(rows[-1]["train_iterations"]),
        "metric": metric,
        "values": [(int(r["train_iterations"]), r[metric]) for r in rows],
        "cpu_minutes": rows[-1]["train_cpu_seconds"] / 60,
        "reconstructions": str(pictures[-1]) if pictures else None,
    }


def goal(arms: Sequence[dict]) -> dict:
    """The issue's goal: best MAE arm >= best random arm + GOAL_GAIN box AP at 10% labels
    (each init's best over its lr sweep, variants excluded); at 100%, MAE no worse."""

    def best(init: str, percent: int) -> dict | None:
        candidates = [
            a
            for a in arms
            if a["init"] == init and a["percent"] == percent and a["group"] != "variants"
        ]
        return max(candidates, key=lambda a: a["box"]["AP"], default=None)

    result = {}
    for percent, margin in ((10, GOAL_GAIN), (100, 0.0)):
        mae, random = best("MAE", percent), best("random", percent)
        if mae is None or random is None:
            continue
        gain = mae["box"]["AP"] - random["box"]["AP"]
        result[f"{percent}%"] = {
            "mae": mae["name"],
            "random": random["name"],
            "box_AP_gain": gain,
            "needed": margin,
            "met": gain >= margin,
        }
    return result


def write_results(out: Path, arms: Sequence[Arm], finetune_iters: int) -> str:
    """results.json, results.md and curves.png from the finished runs; returns the markdown."""
    results = [arm_results(out, arm) for arm in arms]
    pretrainings = {
        pre.name: pretraining_results(out / pre.name, pre)
        for pre in PRETRAININGS
        if any(arm.pretraining == pre.name for arm in arms)
    }
    summary = {"pretraining": pretrainings, "finetune": results, "goal": goal(results)}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    iterations = [point["iteration"] for point in results[0]["curve"]]
    header = (
        "| arm | labels | init | lr | lr decay | drop path | box AP | box AP50 | box AP75 "
        "| mask AP | mask AP50 | box AP at " + " / ".join(map(str, iterations)) + " it "
        "| fine-tuning CPU min |"
    )
    lines = [header, "|---" * 12 + "|"]
    for r in results:
        rec = r["recipe"]
        curve = " / ".join(f"{p['box']:.1f}" for p in r["curve"])
        lines.append(
            f"| {r['label']} | {r['percent']}% | {r['init']} | {rec['lr']:g} | {rec['lr_decay']:g} "
            f"| {rec['drop_path']:g} | {r['box']['AP']:.1f} | {r['box']['AP50']:.1f} "
            f"| {r['box']['AP75']:.1f} | {r['mask']['AP']:.1f} | {r['mask']['AP50']:.1f} "
            f"| {curve} | {r['cpu_minutes']:.1f} |"
        )
    text = [f"Fine-tuning: {finetune_iters} iterations of batch 8 for every arm; AP on "
            "synthetic_val (100 images).", ""]  # fmt: skip
    for name, pre in pretrainings.items():
        minutes = pre["cpu_minutes"]
        start = f"Pretraining `{name}`: {pre['iterations']} iterations, {minutes:.1f} CPU min"
        if pre["metric"] == "bbox/AP":
            values = ", ".join(f"{ap:.1f}" for _, ap in pre["values"])
            text.append(f"{start}; box AP on synthetic_val at each evaluation: {values}")
            continue
        losses = ", ".join(f"{loss:.3f}" for _, loss in pre["values"])
        text.append(
            f"{start}; masked-patch loss on the validation crops at each evaluation: {losses}; "
            f"last reconstructions: {pre['reconstructions']}"
        )
    text += ["", *lines, ""]
    for percent, g in summary["goal"].items():
        verdict = "met" if g["met"] else "missed"
        text.append(
            f"Goal at {percent} labels ({g['mae']} vs {g['random']}): box AP gain "
            f"{g['box_AP_gain']:+.1f}, needed >= {g['needed']:+.1f}: {verdict}"
        )
    markdown = "\n".join(text) + "\n"
    (out / "results.md").write_text(markdown)
    plot_curves(results, out / "curves.png")
    return markdown


def plot_curves(results: Sequence[dict], path: Path) -> None:
    """Box AP (solid) and mask AP (dashed) against fine-tuning iterations: one panel per label
    fraction, one colour per arm."""
    percents = sorted({r["percent"] for r in results})
    figure = Figure(figsize=(6 * len(percents), 4.5))
    axes = figure.subplots(1, len(percents), squeeze=False)[0]
    for ax, percent in zip(axes, percents, strict=True):
        for index, r in enumerate(r for r in results if r["percent"] == percent):
            x = [p["iteration"] for p in r["curve"]]
            colour = f"C{index}"
            ax.plot(x, [p["box"] for p in r["curve"]], "-o", color=colour, label=r["label"])
            ax.plot(x, [p["mask"] for p in r["curve"]], "--", color=colour, alpha=0.6)
        ax.set_title(f"{percent}% of the labeled images (solid: box AP, dashed: mask AP)")
        ax.set_xlabel("fine-tuning iterations (batch 8)")
        ax.set_ylabel("AP on synthetic_val")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    figure.savefig(path, dpi=110, bbox_inches="tight")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", required=True, type=Path)
    parser.add_argument("--groups", default=",".join(GROUPS), help="of: " + ", ".join(GROUPS))
    parser.add_argument("--finetune-iters", type=int, default=400)
    parser.add_argument("--eval-period", type=int, default=100)
    parser.add_argument("--unlabeled-images", type=int, default=4000)
    parser.add_argument(
        "--arms", help="only these arms (comma-separated names of ARMS); default: all of --groups"
    )
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("opts", nargs="*", help="fine-tuning config overrides key=value")
    args = parser.parse_args(argv)
    groups = args.groups.split(",")
    if unknown := set(groups) - set(GROUPS):
        parser.error(f"unknown groups {sorted(unknown)}; choose from {', '.join(GROUPS)}")
    out = args.output_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)

    start_time = time.perf_counter()
    datasets = Path(os.environ.get("DETECTRON2_DATASETS", "datasets")).resolve()
    synthetic.generate(datasets / "synthetic")  # at once when the set is there and complete
    synthetic.generate(
        datasets / "synthetic_unlabeled", num_train=args.unlabeled_images, num_val=0, seed=1
    )
    arms = [arm for arm in ARMS if arm.group in groups]
    if args.arms:
        names = args.arms.split(",")
        if unknown := set(names) - {arm.name for arm in ARMS}:
            parser.error(f"unknown arms {sorted(unknown)}")
        arms = [arm for arm in ARMS if arm.name in names]
    jobs = build_jobs(
        out,
        arms,
        finetune_iters=args.finetune_iters,
        eval_period=args.eval_period,
        opts=args.opts,
        datasets=datasets,
    )
    try:
        run_jobs(jobs, max_jobs=args.jobs)
    finally:  # the table of the arms that finished, also when others failed
        finished_arms = [
            arm for arm, job in zip(arms, arm_jobs(jobs, arms), strict=True) if job.done()
        ]
        if finished_arms:
            print(write_results(out, finished_arms, args.finetune_iters))
    print(f"written: {out / 'results.md'}, {out / 'curves.png'}")
    print(f"benchmark wall-clock: {(time.perf_counter() - start_time) / 60:.0f} min")


if __name__ == "__main__":
    main()

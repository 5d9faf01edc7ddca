"""From a config file and command-line overrides to the config a run uses (training,
evaluation, demo, export alike).

- Overrides are checked: a key that is neither in the config nor an argument of the callable
  its node builds is an error with suggestions (detectron2 would silently add it).
- Datasets are registered: ``--register-coco`` triples, the synthetic set under
  ``$DETECTRON2_DATASETS/synthetic`` when a config names it (lazily: nothing is read or
  generated until a run reads the data), and seeded fixed subsets named ``<dataset>@<percent>%``.
- ``model.roi_heads.num_classes`` follows the class list of the registered datasets.

Loading a config has no other effect: what runs is what the config files name.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
from collections.abc import Sequence

from detectron2.config import LazyConfig
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.registry import locate
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

from .data import subset, synthetic
from .data.coco import CHECKED_FLAG, check_records, register_coco

__all__ = [
    "ConfigError",
    "apply_overrides_strictly",
    "load_config",
    "register_datasets",
    "is_overridden",
    "set_num_classes",
    "set_num_classes_from_datasets",
    "one_line",
    "writable_dir",
    "setup_datasets",
]

logger = logging.getLogger(__name__)

NUM_CLASSES_KEY = "model.roi_heads.num_classes"


class ConfigError(ValueError):
    """A config override or setting that cannot be applied."""


def one_line(error: BaseException) -> str:
    """A user error's message on one line, as the tools print it (a weight-loading report
    spans several)."""
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip())


def _target_parameters(node: DictConfig) -> set[str] | None:
    """Keyword names the node's ``_target_`` accepts; None if that cannot be known.

    A class whose ``__init__`` takes ``**kwargs`` passes them up (detectron2's
    ``StandardROIHeads`` -> ``ROIHeads``): the names of its bases' ``__init__`` count, up to
    the first without ``**kwargs``. A function with ``**kwargs`` accepts anything.
    """
    target = node._target_
    if isinstance(target, str):
        target = locate(target)
    owners = [c.__init__ for c in target.__mro__ if "__init__" in vars(c)]
    owners = owners if inspect.isclass(target) else [target]
    names: set[str] = set()
    for owner in owners:
        params = inspect.signature(owner).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return names - {"self"}
    return None


# Types an override may give a value that is now of the key's type (None: anything).
_COMPATIBLE = {bool: (bool,), int: (int,), float: (int, float), list: (list,), tuple: (list,)}


def _check_value_type(cfg: DictConfig, key: str, value: object) -> None:
    """Raise ConfigError when an override gives a number / flag / list key a value of another
    kind (``train.max_iter=abc``); strings, interpolations and None (``key=null``, how an
    optional setting is turned off) are not checked."""
    old = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
    if isinstance(old, ListConfig):
        old = list(old)
    if old is None or value is None or isinstance(value, str) and value.startswith("${"):
        return
    allowed = _COMPATIBLE.get(type(old))
    if allowed is None:
        return
    ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
    if not ok:
        raise ConfigError(
            f"override '{key}={value}': '{key}' is {old!r} ({type(old).__name__}), "
            f"not a {type(value).__name__}"
        )


def check_override_key(cfg: DictConfig, key: str) -> None:
    """Raise ConfigError unless ``key`` exists in ``cfg`` or names an argument of the callable
    that its parent node builds (``model.backbone.net.use_act_checkpoint``)."""
    node = cfg
    parts = key.split(".")
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth]) or "<root>"
        if isinstance(node, ListConfig):
            if not (part.isdigit() and int(part) < len(node)):
                raise ConfigError(f"override '{key}': '{where}' is a list of {len(node)} items")
            node = node[int(part)]
            continue
        if not isinstance(node, DictConfig):
            raise ConfigError(f"override '{key}': '{where}' is a {type(node).__name__}, not a node")
        if part in node:
            node = node[part]
            continue
        last = depth == len(parts) - 1
        if last and "_target_" in node:
            accepted = _target_parameters(node)
            if accepted is None or part in accepted:
                return
        known = [k for k in node.keys() if k != "_target_"]
        close = difflib.get_close_matches(part, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; it has: {', '.join(known)}"
        raise ConfigError(f"override '{key}': '{where}' has no key '{part}'{hint}")


def apply_overrides_strictly(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """``LazyConfig.apply_overrides`` after checking every key (``+key=value`` adds a key)."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as e:  # hydra's grammar errors
        raise ConfigError(f"cannot parse the overrides {list(overrides)}: {e}") from None
    for override in parsed:
        if not override.is_add():
            check_override_key(cfg, override.key_or_group)
            _check_value_type(cfg, override.key_or_group, override.value())
    return LazyConfig.apply_overrides(cfg, list(overrides))


def writable_dir(path: str | os.PathLike, *, what: str) -> str:
    """Create the folder ``path`` if needed; ConfigError naming ``what`` (the setting or flag)
    if it cannot be created or written to."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{what}={path}: cannot create the folder ({e.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{what}={path}: the folder is not writable")
    return str(path)


def _dataset_names(cfg: DictConfig) -> list[str]:
    """Names of the train and test datasets the config's loaders read."""
    names = []
    for split in ("train", "test"):
        value = OmegaConf.select(cfg, f"dataloader.{split}.dataset.names", default=None)
        names += [value] if isinstance(value, str) else list(value or [])
    return names


def register_datasets(cfg: DictConfig, coco_datasets: Sequence[Sequence[str]] = ()) -> None:
    """Register ``(name, json_file, image_dir)`` COCO datasets, then the synthetic set if the
    config reads it and it is not registered (lazily: generated when first read), then the
    subsets the config names (``"synthetic_train@10%"``, ``vitdet.data.subset``)."""
    for name, json_file, image_dir in coco_datasets:
        register_coco(name, json_file, image_dir)
        logger.info(f"Registered COCO dataset {name}: {json_file}, images in {image_dir}")
    parsed = {name: subset.parse_subset_name(name) for name in _dataset_names(cfg)}
    subsets = [name for name, base_percent in parsed.items() if base_percent]
    bases = [base_percent[0] if base_percent else name for name, base_percent in parsed.items()]
    for name in bases:
        _check_builtin(name)

    wanted = {f"synthetic_{split}" for split in synthetic.SPLITS}
    if wanted.intersection(bases) - set(DatasetCatalog.keys()):
        root = os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "synthetic")
        synthetic.register_synthetic(root)
        logger.info(f"Registered the synthetic dataset under {root} (generated when first read)")
    for name in subsets:  # "<base>@<percent>%": a seeded fixed subset of a registered base
        subset.register_subset(name)


def _check_builtin(name: str) -> None:
    """Route a dataset that another registration made (detectron2's built-in COCO and LVIS
    splits) through ``vitdet.data.coco.check_records`` when it is loaded. Nothing is read now."""
    if name not in DatasetCatalog.keys():
        return
    metadata = MetadataCatalog.get(name)
    if metadata.get(CHECKED_FLAG) or metadata.get("evaluator_type") not in ("coco", "lvis"):
        return
    load = DatasetCatalog[name]

    def checked() -> list[dict]:
        records = load()  # detectron2's loaders set thing_classes when they read the json
        num_classes = len(MetadataCatalog.get(name).get("thing_classes", []))
        return check_records(records, name=name, num_classes=num_classes)

    DatasetCatalog.remove(name)
    DatasetCatalog.register(name, checked)
    metadata.set(**{CHECKED_FLAG: True})


def set_num_classes_from_datasets(cfg: DictConfig, *, explicit: bool) -> None:
    """Set ``model.roi_heads.num_classes`` to the number of classes of the config's datasets.

    All train and test sets with a class list must agree. ``explicit``: the user set
    num_classes on the command line; a different number in the data is then an error.
    """
    if OmegaConf.select(cfg, NUM_CLASSES_KEY, default=None) is None:
        return  # a class-agnostic model (SAM): nothing follows the classes
    classes = {}
    for name in _dataset_names(cfg):
        thing_classes = MetadataCatalog.get(name).get("thing_classes")
        if thing_classes is not None:
            classes[name] = tuple(thing_classes)
    if not classes:
        return
    if len(set(classes.values())) > 1:
        listing = "; ".join(f"{name}: {len(c)} classes {list(c)}" for name, c in classes.items())
        raise ConfigError(f"the train and test datasets have different classes: {listing}")
    num_classes = len(next(iter(classes.values())))
    set_num_classes(cfg, num_classes, source=", ".join(classes), explicit=explicit)


def set_num_classes(cfg: DictConfig, num_classes: int, *, source: str, explicit: bool) -> None:
    """``model.roi_heads.num_classes = num_classes`` (the classes of ``source``, named in the
    log and errors); ``explicit``: the user set it on the command line, so a different number
    is an error."""
    current = cfg.model.roi_heads.num_classes
    if current == num_classes:
        return
    if explicit:
        raise ConfigError(
            f"{NUM_CLASSES_KEY}={current} was given, but {source} has {num_classes} classes"
        )
    logger.info(f"{NUM_CLASSES_KEY}: {current} -> {num_classes}, the classes of {source}")
    cfg.model.roi_heads.num_classes = num_classes


def is_overridden(key: str, overrides: Sequence[str]) -> bool:
    """Whether the command-line ``overrides`` set ``key``."""
    return any(o.split("=", 1)[0].lstrip("+") == key for o in overrides)


def load_config(config_file: str | os.PathLike, overrides: Sequence[str] = ()) -> DictConfig:
    """Load ``config_file`` and apply the overrides, every key checked."""
    cfg = LazyConfig.load(str(config_file))
    return apply_overrides_strictly(cfg, overrides)


def setup_datasets(
    cfg: DictConfig, coco_datasets: Sequence[Sequence[str]] = (), *, overrides: Sequence[str] = ()
) -> None:
    """Register the datasets, then make num_classes follow them (``overrides``: the command
    line, to tell an explicit num_classes from the config's)."""
    register_datasets(cfg, coco_datasets)
    set_num_classes_from_datasets(cfg, explicit=is_overridden(NUM_CLASSES_KEY, overrides))

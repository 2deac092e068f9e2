"""Training configuration: a dataclass validated in __post_init__, defaults from YAML, overrides from the CLI."""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import os
import tokenize
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from emotion.errors import EmotionError
from emotion.info import default as info_default
from emotion.labels import LABELS
from emotion.sources import parse as parse_source

from .errors import ConfigError
from .fields import coerce
from .sources import SourceConfig

CONFIG_DIR = Path(__file__).parent / "configs"
BALANCE_CHOICES = ("none", "sampler", "weights")
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
AUGMENT_FAMILIES = ("framing", "geometry", "light", "degrade", "gray", "occlusion")  # trainer/augment.py


@dataclass
class TrainConfig:
    # what to train
    model: str = "small_cnn"  # 'small_cnn' or any timm architecture ('resnet50', 'tf_efficientnet_lite0', ...)
    init: str | None = None  # starting weights: local-dir:/path or hf-hub:org/name holding model.safetensors
    pretrained: bool = False  # timm models: start from timm's ImageNet weights on the Hub (e.g. timm/resnet50.a1_in1k)
    # data
    data: str = "../shared/data/ferplus"  # Hub dataset id, a folder of parquet shards, or an image folder
    sources: list[dict] | None = None  # several data sets at once (YAML only; see trainer/sources.py); replaces data
    select_on: dict[str, float] | None = None  # best epoch by this mix of reports, e.g. {validation: 0.5, posed_clean: 0.5}
    select_metric: str = "macro_f1"  # the metric select_on mixes: 'macro_f1' or 'accuracy'
    select_floor: dict[str, float] | None = None  # reports whose select_metric must stay at or above a floor
    baseline: str | None = None  # a model (local-dir:/hf-hub:) held to on every report: floors at its accuracy less its noise, and a comparison after export (trainer/no_trade.py)
    teacher: str | None = None  # a model (local-dir:/hf-hub:) whose answers blend into the targets of the sources with a teacher_weight (trainer/teacher.py)
    train_split: str = "train"  # the split trained on
    val_split: str = "validation"  # the split scored after each epoch (best epoch, temperature, bias)
    val_fraction: float = 0.1  # cut from train (seeded, stratified) when the data set has no validation split
    soft_labels: bool = True  # use vote distributions when the data set has a `votes` column (FER+)
    max_train_samples: int | None = None  # cap on training rows (drawn with seed), for quick runs and tests
    max_val_samples: int | None = None  # cap on validation rows, for quick runs and tests
    # input
    img_size: int = 48  # the model's input height and width in pixels (faces are resized to it)
    channels: int = 1  # 1 = grayscale; 3 = gray replicated to RGB (ImageNet backbones)
    mean: float = 0.5  # per-channel normalisation (the same value for every channel: the faces are grayscale)
    std: float = 0.5  # per-channel normalisation divisor, paired with mean
    # serving facts written to config.json; their defaults are ModelInfo's (emotion/info.py), defined once there
    crop_margin: float = info_default("crop_margin")  # margin around the detector's box
    crop_offset_y: float = info_default("crop_offset_y")  # crop centre shift (negative = up)
    # augmentation (training only): families from trainer/augment.py
    augment: list[str] = field(default_factory=lambda: ["framing", "geometry", "light", "occlusion"])  # augmentation families used, from framing, geometry, light, degrade, gray, occlusion (trainer/augment.py)
    scale_min: float = 0.8  # framing: tightest crop, as a share of the serving crop's area
    scale_max: float = 1.2  # framing: loosest crop, as a multiple of the serving crop's side (edges repeat past the data)
    shift: float = 0.06  # framing: the crop centre moves by up to this share of the side, either way
    rotate: float = 10.0  # geometry: random rotation range, in degrees either way
    hflip: bool = True  # geometry: mirror faces at random
    jitter: float = 0.3  # brightness/contrast jitter strength
    erase: float = 0.25  # occlusion: probability of erasing a patch
    # optimisation
    epochs: int = 30  # passes over the training data
    batch_size: int = 64  # images per optimiser step, summed over processes
    lr: float = 2e-3  # peak AdamW learning rate (after warmup; cosine decay to the end)
    backbone_lr_mult: float = 1.0  # transfer: the backbone's LR is lr * this (the head keeps lr)
    freeze_epochs: int = 0  # transfer: train only the head for this many epochs first
    weight_decay: float = 0.05  # AdamW decoupled weight decay (not applied to norms and biases)
    warmup_epochs: float = 1.0  # linear LR warmup, in epochs (fractions allowed)
    label_smoothing: float = 0.0  # mass moved from the targets to a uniform distribution
    one_vs_rest: dict[str, float] | None = None  # class -> weight of a binary cross-entropy on its probability, added to the loss (e.g. {contempt: 1.0}: a face that is not contempt pays -log(1 - p) for the contempt it is given)
    aux_targets: str | None = None  # 'action_units': Face Landmarker's 23 AUs of each training face as auxiliary targets of a head on the pooled features (trainer/aux_targets.py); training only, the export is the classifier
    aux_weight: float = 1.0  # weight of the auxiliary loss (binary cross-entropy per AU) beside the classification loss
    aux_cache: str | None = None  # a FaceCache .npz holding what the landmarker read on each training image, shared between runs (default: <output_dir>/faces.npz)
    ema_decay: float = 0.0  # keep an exponential moving average of the weights (e.g. 0.998); validated and exported instead of the raw weights; 0 = off
    grad_accum: int = 1  # split each step's batch into this many micro-batches (same step, less memory); batch_size stays the effective batch
    balance: str = "none"  # 'sampler' (class-balanced sampling), 'weights' (loss weights), or 'none'
    drop_rate: float = 0.3  # dropout before the classifier
    tta_flip: bool = info_default("tta_flip")  # serving averages each face with its mirror image
    flip_margin: float | None = info_default("flip_margin")  # ... only where its two top logits are this close (None: every face)
    uncertain_threshold: float = info_default("uncertain_threshold")  # serving flags a face whose top probability is below this
    recalibrate_bn: bool = False  # after training: BatchNorm statistics from un-augmented training faces
    interpolate: str = "none"  # 'fit': average the tuned weights with init's (WiSE-FT), weight chosen on select_on
    interpolate_grid: list[float] = field(default_factory=lambda: [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])  # weights tried
    neutral_bias: str = "none"  # 'fit': a logit bias on neutral chosen on the select_on mix, written to config.json; 'none'
    contempt_bias: str = "none"  # 'fit': the same for contempt (after neutral's): a one-class contempt source shifts the prior
    # run
    output_dir: str = "runs/small_cnn"  # checkpoints, logs and export/ go here; rerunning resumes from it
    seed: int = 42  # seeds the split, sampling, augmentation and initialisation
    workers: int = -1  # DataLoader workers; -1 = sized to the machine
    device: str = "auto"  # 'cpu', 'cuda', 'mps' or 'auto' = the first available of cuda, mps, cpu
    precision: str = "auto"  # 'bf16' (autocast; weights stay float32), 'fp32', or 'auto' = bf16 where the device runs it natively
    ckpt_every: int = 200  # steps between checkpoints (one is also written at each epoch end)
    log_every: int = 20  # steps between updates of the loss/lr shown with the progress
    export_dtype: str = "float16"  # weights in the export: 'float16' halves the size; 'float32'
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes carried into eval_results.json

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # YAML and the CLI give strings, ints for floats, 'no' for False: one rule
            setattr(self, f.name, coerce(f.name, getattr(self, f.name), hints[f.name]))
        for name, ok, valid in self._checks():
            if not ok:
                raise ConfigError(f"invalid {name}={getattr(self, name)!r}: expected {valid}")
        if self.sources:
            self.sources = [vars(SourceConfig.parse(s)) for s in self.sources]  # validated, defaults filled in

    def _checks(self) -> list[tuple[str, bool, str]]:
        """(field, whether its value is valid, what a valid one is) for every field with a rule."""
        return [
            ("balance", self.balance in BALANCE_CHOICES, f"one of {', '.join(BALANCE_CHOICES)}"),
            ("device", self.device in DEVICE_CHOICES, f"one of {', '.join(DEVICE_CHOICES)}"),
            ("channels", self.channels in (1, 3), "1 or 3"),
            ("precision", self.precision in ("auto", "bf16", "fp32"), "auto, bf16 or fp32"),
            ("export_dtype", self.export_dtype in ("float16", "float32"), "float16 or float32"),
            ("img_size", 16 <= self.img_size <= 512, "an integer from 16 to 512"),
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("batch_size", self.batch_size >= 1, "an integer >= 1"),
            ("lr", self.lr > 0, "a number > 0"),
            ("val_fraction", 0 < self.val_fraction < 1, "a number between 0 and 1"),
            ("scale_min", 0 < self.scale_min <= 1, "a number in (0, 1]"),
            ("scale_max", 1 <= self.scale_max <= 2, "a number in [1, 2]"),
            ("shift", 0 <= self.shift <= 0.3, "a number in [0, 0.3]"),
            ("erase", 0 <= self.erase <= 1, "a probability in [0, 1]"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "a number in [0, 1)"),
            ("one_vs_rest", self.one_vs_rest is None or (isinstance(self.one_vs_rest, dict) and all(
                k in LABELS and isinstance(v, (int, float)) and v >= 0 for k, v in self.one_vs_rest.items())),
             f"a mapping of class ({', '.join(LABELS)}) -> weight >= 0"),
            ("aux_targets", self.aux_targets in (None, "action_units"), "action_units, or unset for none"),
            ("aux_weight", self.aux_weight >= 0, "a number >= 0"),
            ("flip_margin", self.flip_margin is None or self.flip_margin >= 0, "a number >= 0, or unset for every face"),
            ("ema_decay", self.ema_decay == 0 or 0.5 <= self.ema_decay < 1, "0 (off) or a number in [0.5, 1)"),
            ("grad_accum", self.grad_accum >= 1, "an integer >= 1 that divides batch_size per process"),
            ("std", self.std > 0, "a number > 0"),
            ("ckpt_every", self.ckpt_every >= 1, "an integer >= 1"),
            ("select_metric", self.select_metric in ("macro_f1", "accuracy"), "macro_f1 or accuracy"),
            ("baseline", self.baseline is None or (_is_source(self.baseline) and self.select_metric == "accuracy"),
             "unset, or local-dir:/path, hf-hub:org/name[@revision] or a shipped model's name, with "
             "select_metric: accuracy (its floors are accuracies)"),
            ("neutral_bias", self.neutral_bias in ("none", "fit"), "none or fit"),
            ("contempt_bias", self.contempt_bias in ("none", "fit"), "none or fit"),
            ("interpolate", self.interpolate in ("none", "fit") and (self.interpolate == "none" or self.init),
             "none, or fit together with init: (the weights to interpolate with)"),
            ("interpolate_grid", len(self.interpolate_grid) > 0 and all(0 < a <= 1 for a in self.interpolate_grid),
             "a non-empty list of weights in (0, 1]"),
            ("augment", isinstance(self.augment, list) and set(self.augment) <= set(AUGMENT_FAMILIES),
             f"a list drawn from {', '.join(AUGMENT_FAMILIES)}"),
            ("sources", self.sources is None or (isinstance(self.sources, list) and len(self.sources) > 0),
             "a non-empty list of sources (name:, data:, weight: ...)"),
            ("select_on", self.select_on is None or (isinstance(self.select_on, dict) and self.select_on
                                                     and all(isinstance(v, (int, float)) and v >= 0
                                                             for v in self.select_on.values())),
             "a mapping of report name -> weight >= 0"),
            ("select_floor", self.select_floor is None or (isinstance(self.select_floor, dict) and all(
                isinstance(v, (int, float)) and 0 <= v <= 1 for v in self.select_floor.values())),
             "a mapping of report name -> floor in [0, 1]"),
            ("teacher", _is_source(self.teacher) if self.teacher else not _distils(self.sources),
             "local-dir:/path, hf-hub:org/name[@revision] or a shipped model's name (a teacher_weight needs one)"),
            ("init", self.init is None or _is_source(self.init),
             "local-dir:/path, hf-hub:org/name[@revision] or a shipped model's name"),
        ]

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(dataclasses.asdict(self), sort_keys=False))


def _distils(sources) -> bool:
    """Whether any source asks for a share of the teacher's answers (trainer/teacher.py)."""
    return any(isinstance(s, dict) and (s.get("teacher_weight") or 0) > 0 for s in sources or [])


def _is_source(text: str) -> bool:
    try:
        parse_source(text)
        return True
    except EmotionError:
        return False


def field_comments(cls: type) -> dict[str, str]:
    """The trailing `# ...` comment of each field in `cls`'s source, by field name.

    The comments beside the fields are the fields' documentation (read like nanoGPT's config); `--help` is generated
    from them, so a new field documents itself on the command line by having one. {} when the source is not shipped.
    """
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments, line = {}, []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.NEWLINE, tokenize.NL):
            line = []
        elif tok.type == tokenize.COMMENT and len(line) >= 2 and line[0].type == tokenize.NAME and line[1].string == ":":
            comments[line[0].string] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.INDENT, tokenize.DEDENT):
            line.append(tok)
    return comments


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """One `--field value` option per TrainConfig field (`--flag/--no-flag` for booleans), all defaulting to None
    (so that a --config file can set what the command line does not); the help is the field's comment."""
    parser.add_argument("--config", help="YAML file with defaults, e.g. trainer/configs/small_cnn.yaml")
    comments = field_comments(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("extra", "sources", "select_on", "select_floor", "one_vs_rest"):  # structured: YAML only
            continue
        opt = "--" + f.name.replace("_", "-")
        default = f.default_factory() if callable(f.default_factory) else f.default
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        help = f"{comments.get(f.name, '')} [default: {shown}]".replace("%", "%%")  # argparse %-formats help
        if isinstance(default, list):  # comma-separated; the items go through the YAML coercion
            parser.add_argument(opt, dest=f.name, default=None, metavar="VALUE,...",
                                type=lambda v: [x for x in v.split(",") if x], help=help)
        elif str(f.type) == "bool":
            parser.add_argument(opt, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help)
        else:
            # no argparse type: the value goes through the same coercion as YAML, with the same one-line error
            parser.add_argument(opt, dest=f.name, default=None, metavar=f.name.upper(), help=help)


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Dataclass defaults < YAML file < CLI options. Raises ConfigError naming the bad field."""
    values: dict[str, Any] = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file() and (CONFIG_DIR / path.name).is_file():
            path = CONFIG_DIR / path.name
        if not path.is_file():
            raise ConfigError(f"config file {args.config} not found; the shipped ones are in {CONFIG_DIR}")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            line = f" (line {where.line + 1})" if where else ""
            raise ConfigError(f"{path} is not valid YAML{line}: fix the file or start from {CONFIG_DIR}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path} must be a mapping of field: value lines, not a {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown field(s) {', '.join(unknown)} in {path}; valid fields: {', '.join(sorted(known))}")
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    return TrainConfig(**values)


def default_workers() -> int:
    """Loader workers: leave the cores to the math on small machines (augmenting 48 px faces is cheap)."""
    return max(0, min(4, (os.cpu_count() or 1) // 2 - 0))

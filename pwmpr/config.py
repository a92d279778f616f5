"""RunConfig and its parts: the one typed source of truth for a run, with help text, checks and JSON round trip.

The CLI flags come from the ``help`` metadata; ``config.json`` is ``RunConfig.to_dict()``. New fields need
defaults so old run folders keep their meaning.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pwmpr.errors import PwmprError

# 2: train.optimizer, train.lr may be null, shrink.alpha; 3: stop.max_cost; 4: the plateau rule as the default stop;
# 5: shrink-perturb as the default final init; 6: stop.plateau_resolve (the window spans what the validation set
# resolves; on by default for one release, off since: every version-6 config records it); 7: stop.chance_guard
# (older versions are migrated on load); 8: train.warmup_epochs (off by default, so an older config without it
# needs no migration: it means no warm-up; the new version makes an older pwmpr say so rather than name the key);
# 9: augment (auto, the data set's own choice, is what every older run did: no migration)
CONFIG_VERSION = 9
SEED_LIMIT = 2**63  # torch generators take 64-bit seeds; seed + a few offsets must still fit


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with its help; ``flag``: its CLI name if not the field's; ``registry``: ``module:NAME``."""
    return field(default=default, metadata={"help": help, **kw})


def check(cond: bool, name: str, value: Any, want: str) -> None:
    """Raise PwmprError ``<name> must be <want>, got <value>`` unless ``cond``: the one range check of every option."""
    if not cond:
        raise PwmprError(f"{name} must be {want}, got {value!r}")


DEFAULT_LR = {"sgd": 0.1, "adamw": 1e-3}  # the learning rate each optimizer takes when --lr is not given


@dataclass
class TrainConfig:
    """How each phase is trained (docs/method.md, "Rough training"; PHEW/OpenLTH defaults)."""

    optimizer: str = _f("sgd", "Optimizer: sgd (Nesterov momentum; the paper's and PHEW's) or adamw (Adam with "
                        "decoupled weight decay, Loshchilov & Hutter 2019; what ViTs train with).")
    lr: float | None = _f(None, "Learning rate (default: 0.1 with sgd, 0.001 with adamw).")
    momentum: float = _f(0.9, "SGD momentum (sgd only; adamw keeps Adam's betas 0.9, 0.999).")
    weight_decay: float = _f(1e-4, "Weight decay (adamw: decoupled; e.g. 0.05 for ViTs).")
    batch_size: int = _f(128, "Mini-batch size.")
    phase_schedule: str = _f("cosine", "Learning rate within a growth phase: cosine (to 0; steadier accuracy "
                             "points for the stop rule) or constant.")
    final_schedule: str = _f("cosine", "Learning rate of the final training: cosine, step (x0.1 at 50%/75%) "
                             "or constant.")
    warmup_epochs: float = _f(0.0, "PWMPR: epochs of linear learning-rate warm-up wherever training restarts from "
                              "trained weights: every phase after the first (growth and shrink stage) and a final "
                              "training that starts from the grown weights (continue, shrink-perturb); 0 starts each "
                              "at the peak rate. Fewer rough phases lose what the one before learned, but the "
                              "discovery benchmark hit less often with it (docs/method.md, \"Rough training\").")
    bf16: bool = _f(False, "bf16 autocast for forward and backward (CUDA).")
    channels_last: bool = _f(True, "channels_last memory format for conv nets on CUDA.")

    def __post_init__(self) -> None:
        check(self.optimizer in DEFAULT_LR, "optimizer", self.optimizer, " or ".join(DEFAULT_LR))
        check(self.lr is None or (self.lr > 0 and math.isfinite(self.lr)), "lr", self.lr, "a positive number")
        check(0 <= self.momentum < 1, "momentum", self.momentum, "in [0, 1)")
        check(0 <= self.weight_decay < math.inf, "weight_decay", self.weight_decay, "a finite number >= 0")
        check(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        check(0 <= self.warmup_epochs < math.inf, "warmup_epochs", self.warmup_epochs, "a finite number >= 0")
        check(self.phase_schedule in ("constant", "cosine"), "phase_schedule", self.phase_schedule,
               "constant or cosine")
        check(
            self.final_schedule in ("cosine", "step", "constant"),
            "final_schedule", self.final_schedule, "cosine, step or constant",
        )

    @property
    def base_lr(self) -> float:
        """The learning rate in use: ``lr`` when given, else the optimizer's default."""
        return DEFAULT_LR[self.optimizer] if self.lr is None else self.lr


@dataclass
class GrowthConfig:
    """How the network is seeded and grown (docs/method.md, "Seed", "Score" and "Grow")."""

    seed_method: str = _f("phew", "How the seed mask is drawn.", registry="pwmpr:SEEDS")
    seed_density: float = _f(0.05, "Density of the seed network, in (0, 1].")
    rule: str = _f("pwmp-explore", "Growth rule (pwmp-explore: sampled by PWMP score, with 10% of each step among the "
                   "edges of units no seeded path reaches, which PWMP scores 0; pwmp: PWMP alone, the paper's rule; "
                   "pwmp-topk: the highest scores).", registry="pwmpr:GROWTH_RULES", flag="growth")
    init_scale: str = _f("keep", "How the kept weights of every method's start mask are scaled: {names} (keep: "
                         "their initial values, the paper's; fan-in: each unit's kept weights x sqrt(dense fan-in / "
                         "kept fan-in), so a sparse unit starts with the pre-activation variance the dense one had, "
                         "for models whose initialisation fades at low density, such as PyTorch's default).",
                         registry="pwmpr.seed.scale:INIT_SCALES")
    gamma: float = _f(0.25, "Growth per step as a fraction of the current edge count (density x1.25 by "
                      "default).")
    scope: str = _f("global", "Growth budget: global (one budget) or layer (gamma per layer).")
    zeta: float = _f(0.0, "Prune-and-regrow (hybrid growth): at each growth step from --zeta-start on, also remove "
                     "this fraction of the present edges by lowest |w| and regrow as many, with the gamma growth, by "
                     "the growth rule (cosine-decayed over --zeta-steps steps); in [0, 1), 0 turns it off.")
    zeta_start: int = _f(0, "Prune-and-regrow: the first growth step (0: after the first phase) that prunes.")
    zeta_steps: int = _f(10, "Prune-and-regrow: growth steps over which zeta decays to 0 along a cosine (as RigL's "
                         "drop fraction); 0 keeps zeta constant.")

    def __post_init__(self) -> None:
        check(0 < self.seed_density <= 1, "seed_density", self.seed_density, "in (0, 1]")
        check(self.gamma > 0 and math.isfinite(self.gamma), "gamma", self.gamma, "a positive number")
        check(self.scope in ("global", "layer"), "scope", self.scope, "global or layer")
        check(0 <= self.zeta < 1, "zeta", self.zeta, "in [0, 1)")
        check(self.zeta_start >= 0, "zeta_start", self.zeta_start, ">= 0")
        check(self.zeta_steps >= 0, "zeta_steps", self.zeta_steps, ">= 0")


@dataclass
class StopConfig:
    """When growth stops (docs/method.md, "Stop")."""

    rule: str = _f("plateau", "Stop rule: plateau stops when doubling the density buys less than --plateau-tol; "
                   "gain when growing on would gain less than --stop-tol with probability >= 1 - alpha under a "
                   "posterior over the accuracy-density curve; paper is the paper's saturation fit, bounded and "
                   "checked against the noise.", registry="pwmpr.stop:STOP_RULES", flag="stop")
    tol: float = _f(0.005, "gain rule: accuracy gain (0.01 = one point) below which growing on is not worth it.",
                    flag="stop-tol")
    alpha: float = _f(0.1, "Error level of the stop rules: gain stops when the gain is below tol with probability "
                      "at least 1 - alpha; the plateau window spans a gain of ln(1/alpha) validation samples.",
                      flag="stop-alpha")
    min_points: int = _f(4, "Accuracy-density points a stop decision needs.", flag="stop-min-points")
    consecutive: int = _f(2, "Consecutive refits that must agree before stopping.", flag="stop-consecutive")
    plateau_tol: float = _f(0.005, "Plateau rule (not in the paper): stop when doubling the density gains less than "
                            "this accuracy (+1 s.e., last --stop-min-points + 1 points, or more under "
                            "--plateau-resolve); beside another --stop rule it is a fallback, which 0 disables.")
    chance_guard: bool = _f(True, "Hold back any stop while the validation accuracy is not above chance (1/classes "
                            "or the commonest class's share) beyond noise: a flat curve there is a network that has "
                            "not started to learn.")
    plateau_resolve: bool = _f(False, "Plateau rule: widen its window until a gain of --plateau-tol per doubling "
                               "over it amounts to ln(1/--stop-alpha) validation samples, so that a flat window "
                               "on a small validation set is evidence of a plateau (off: the last points; "
                               "docs/method.md, \"plateau\", says which hit more often).")
    max_density: float = _f(1.0, "Stop growing once the density reaches this value.")
    max_phases: int = _f(30, "Stop after this many growth phases at the most.")
    max_cost: float = _f(1.5, "Cost guard: stop growing when the next phase plus the final training would take "
                         "the run's training FLOPs past this many dense runs (1.5: the paper's budget); 0 disables it.")

    def __post_init__(self) -> None:
        check(self.tol >= 0 and math.isfinite(self.tol), "stop tol", self.tol, ">= 0")
        check(0 < self.alpha < 1, "alpha", self.alpha, "in (0, 1)")
        check(self.min_points >= 3, "min_points", self.min_points, ">= 3 (the fit has 3 parameters)")
        check(self.consecutive >= 1, "consecutive", self.consecutive, ">= 1")
        check(0 <= self.plateau_tol < math.inf, "plateau_tol", self.plateau_tol, "a finite number >= 0")
        check(self.rule != "plateau" or self.plateau_tol > 0, "plateau_tol", self.plateau_tol,
               "> 0 under --stop plateau (0 would never stop)")
        check(0 < self.max_density <= 1, "max_density", self.max_density, "in (0, 1]")
        check(self.max_phases >= 1, "max_phases", self.max_phases, ">= 1")
        check(self.max_cost >= 0 and math.isfinite(self.max_cost), "max_cost", self.max_cost, ">= 0 (0: no guard)")


@dataclass
class ShrinkConfig:
    """The optional shrink stage after growth stops: the smallest density that keeps the discovered accuracy."""

    enabled: bool = _f(False, "After growth stops, shrink: prune --shrink-fraction of the present edges by "
                       "magnitude, regrow --shrink-regrow of them by the growth rule, retrain one rough phase; repeat "
                       "while validation accuracy stays within --shrink-tol of the discovered network's (judged "
                       "at --shrink-alpha), then go back to the last network that did.", flag="shrink")
    tol: float = _f(0.01, "shrink: accuracy loss (0.01 = one point) against the discovered network that is still "
                    "accepted.", flag="shrink-tol")
    fraction: float = _f(0.2, "shrink: fraction of the present edges pruned by magnitude at each step, in (0, 1).",
                         flag="shrink-fraction")
    regrow: float = _f(0.05, "shrink: fraction of the present edges regrown by the growth rule at each step, in "
                       "[0, --shrink-fraction).", flag="shrink-regrow")
    max_steps: int = _f(30, "shrink: steps at the most.", flag="shrink-max-steps")
    alpha: float = _f(0.5, "shrink: a candidate fails when its validation loss D exceeds --shrink-tol + "
                      "z_(1-alpha) x its standard error, in (0, 1). 0.5: the measured loss itself must stay within "
                      "the tolerance; 0.05: it fails only once the data show the loss exceeds it (lenient on small "
                      "validation sets); 0.95: it passes only once they show the loss is within it.",
                      flag="shrink-alpha")

    def __post_init__(self) -> None:
        check(self.tol >= 0 and math.isfinite(self.tol), "shrink tol", self.tol, ">= 0")
        check(0 < self.fraction < 1, "shrink fraction", self.fraction, "in (0, 1)")
        check(0 <= self.regrow < self.fraction, "shrink regrow", self.regrow, "in [0, shrink fraction)")
        check(self.max_steps >= 1, "shrink max_steps", self.max_steps, ">= 1")
        check(0 < self.alpha < 1, "shrink alpha", self.alpha, "in (0, 1)")


def _stop_default(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """``data`` with ``stop[key]`` set to ``value`` where the stop section does not say (a section that is not a
    mapping is left for the config check to refuse)."""
    stop = data.get("stop")
    stop = dict(stop) if isinstance(stop, dict) else {} if stop is None else stop
    if isinstance(stop, dict):
        stop.setdefault(key, value)
        return {**data, "stop": stop}
    return data


def _migrate_v6(data: dict[str, Any]) -> dict[str, Any]:
    """A config of version 6 or older in today's terms: no chance guard held its stops back."""
    return _stop_default(data, "chance_guard", False)


def _migrate_v5(data: dict[str, Any]) -> dict[str, Any]:
    """A config of version 5 or older in today's terms: its plateau window was the last points, however few
    validation samples they stood for."""
    return _stop_default(data, "plateau_resolve", False)


def _migrate_v4(data: dict[str, Any]) -> dict[str, Any]:
    """A config of version 4 or older in today's terms: its final training continued from the grown weights."""
    return {**data, "final_init": data.get("final_init", "continue")}


def _migrate_v3(data: dict[str, Any]) -> dict[str, Any]:
    """A config of version 3 or older in today's terms: its defaults were the gain rule and a 1-point plateau."""
    stop = data.get("stop")
    stop = dict(stop) if isinstance(stop, dict) else {} if stop is None else stop
    if isinstance(stop, dict):
        stop.setdefault("rule", "gain")
        stop.setdefault("plateau_tol", 0.01)
        return {**data, "stop": stop}
    return data


def _migrate_v2(data: dict[str, Any]) -> dict[str, Any]:
    """A version-2 config (written before the cost guard) in today's terms: its run had no guard."""
    stop = data.get("stop")
    if isinstance(stop, dict) and "max_cost" not in stop:
        return {**data, "stop": {**stop, "max_cost": 0.0}}
    if stop is None:
        return {**data, "stop": {"max_cost": 0.0}}
    return data


def _migrate_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 config in today's terms, meaning the same (stop rule ``paper-unbounded``, shrink alpha, SGD lr)."""
    data = dict(data)
    shrink, stop, train = data.get("shrink"), data.get("stop"), data.get("train")
    if isinstance(stop, dict) and "rule" not in stop:
        data["stop"] = {**stop, "rule": "paper-unbounded"}
    if isinstance(shrink, dict) and "alpha" not in shrink:
        stop_alpha = stop.get("alpha") if isinstance(stop, dict) else None
        data["shrink"] = {**shrink, "alpha": StopConfig().alpha if stop_alpha is None else stop_alpha}
    if isinstance(train, dict) and "optimizer" not in train and train.get("lr") == DEFAULT_LR["sgd"]:
        data["train"] = {**train, "lr": None}
    return data


@dataclass
class RunConfig:
    """Everything that defines a run; ``config.json`` in the run folder is this, and reproduces the run."""

    method: str = _f("pwmpr", "What the run does: pwmpr (grow), dense, imp, oneshot, rigl, set.")
    model: str = _f("auto", "Model: auto (the data set's default), one of {names}, or package.module:function for "
                    "your own factory function(num_classes, input_shape) -> nn.Module.", registry="pwmpr:MODELS")
    data: str = _f("mnist5k", "Data set: one of {names} (npz as npz:PATH, an array file; folder as folder:PATH, "
                   "your images in one folder per class, under train/ and test/ (or val/, valid/) or not split; "
                   "torchvision as torchvision:NAME, any image-classification data set torchvision ships, with "
                   "its own arguments as torchvision:NAME:KEY=VALUE,...; text as "
                   "text:PATH, a UTF-8 file or folder of byte tokens; mnist5k, digits and pydoc-text need no "
                   "download).",
                   registry="pwmpr.data:DATASETS")
    augment: str = _f("auto", "What training sees of an image: auto (the data set's own: a random crop and a "
                      "horizontal flip for cifar10, cifar100, folder:PATH, torchvision:NAME and the ImageNets, none "
                      "for the rest), crop-flip, crop (the crop alone: for images a mirror changes, such as digits, "
                      "letters and road signs) or none.")
    data_dir: str | None = _f(None, "Directory holding the data set files (downloads go here when allowed).")
    val_fraction: float = _f(0.1, "Fraction of the training set held out as the validation split (text data sets "
                             "bring their own, split by document).")
    max_train: int | None = _f(None, "Use at most this many training samples (quick trials).")
    context: int | None = _f(None, "Tokens per sample of a text data set, the model's context (default: 128).")
    seed: int = _f(0, "Random seed for the model, the seed mask, the data order and growth.")
    device: str = _f("auto", "auto (CUDA when available), cpu or cuda.")
    phase_epochs: int = _f(10, "Epochs of rough training per growth phase.")
    final_epochs: int = _f(30, "Epochs of the final training at the discovered density.")
    final_init: str = _f("shrink-perturb", "The weights final training starts from, under the grown mask: {names} "
                         "(continue: as growth left them; reinit: the model's initial weights; rewind: the seed's "
                         "edges at their initial values, grown ones at zero; shrink-perturb: 0.4 x the grown "
                         "weights + 0.1 x the initial ones).",
                         registry="pwmpr.methods.final_init:FINAL_INITS")
    reference_epochs: int | None = _f(None, "Epochs of the dense run that costs are compared with (default: final).")
    tau_core: bool = _f(True, "Measure the tau-core (bottleneck metric) after every phase.")
    checkpoint_minutes: float = _f(10.0, "During final training, also checkpoint at the end of an epoch once this "
                                   "many minutes passed since the last checkpoint (0: after every epoch).")
    keep_checkpoints: int = _f(2, "Checkpoints kept in the run folder: the newest this many (the one before the "
                               "newest is resume's fallback); 0 keeps every phase's.")
    workers: int | None = _f(None, "DataLoader worker processes per rank for image folders (default: the CPUs "
                             "per rank minus one, at most 8; 0 loads in the main process).")
    train: TrainConfig = field(default_factory=TrainConfig)
    growth: GrowthConfig = field(default_factory=GrowthConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    shrink: ShrinkConfig = field(default_factory=ShrinkConfig)
    options: dict[str, Any] = field(default_factory=dict, metadata={"help": "Method-specific options."})

    def __post_init__(self) -> None:
        for name, cls in (("train", TrainConfig), ("growth", GrowthConfig), ("stop", StopConfig),
                          ("shrink", ShrinkConfig)):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, _from_dict(cls, getattr(self, name), name))
        check(0 < self.val_fraction < 1, "val_fraction", self.val_fraction, "in (0, 1)")
        check(isinstance(self.seed, int) and 0 <= self.seed < SEED_LIMIT, "seed", self.seed,
               "a whole number in [0, 2**63) (the random generators take 64-bit seeds)")
        check(self.max_train is None or self.max_train >= 10, "max_train", self.max_train, ">= 10")
        check(self.context is None or (isinstance(self.context, int) and self.context >= 1), "context", self.context,
              "a whole number >= 1")
        check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device", self.device,
               "auto, cpu or cuda")
        check(self.workers is None or (isinstance(self.workers, int) and self.workers >= 0), "workers",
               self.workers, "a whole number >= 0")
        check(self.phase_epochs >= 1, "phase_epochs", self.phase_epochs, ">= 1")
        check(self.final_epochs >= 0, "final_epochs", self.final_epochs, ">= 0")
        check(self.checkpoint_minutes >= 0, "checkpoint_minutes", self.checkpoint_minutes, ">= 0")
        check(self.keep_checkpoints >= 0, "keep_checkpoints", self.keep_checkpoints, ">= 0")
        check(self.reference_epochs is None or self.reference_epochs >= 1, "reference_epochs",
               self.reference_epochs, ">= 1")

    @property
    def dense_reference_epochs(self) -> int:
        """Epochs of the dense training run that cost is measured against."""
        return self.reference_epochs or self.final_epochs or self.phase_epochs

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with a version tag."""
        return {"version": CONFIG_VERSION, **dataclasses.asdict(self)}

    def canonical(self, final_training: bool = True, growth_stop: bool = True) -> dict[str, Any]:
        """``to_dict`` with the learning rate in effect, no shrink settings when there is no shrink stage, no
        checkpoint settings, for a method without a final training no final start, and for one that does not grow
        by the growth rule and stop on the curve (``growth_stop`` False) no stop settings, no growth rule and no
        warm-up (PWMPR's alone), so that two configs that train alike are equal."""
        data = self.to_dict()
        if not final_training:
            data.pop("final_init")
        if not growth_stop:
            data.pop("stop")
            data["growth"].pop("rule")
            data["train"].pop("warmup_epochs")  # only PWMPR restarts from trained weights with a warm-up
        elif not self.stop.plateau_tol > 0:  # no plateau test: its window means nothing
            data["stop"].pop("plateau_resolve")
        data["train"]["lr"] = self.train.base_lr
        for key in ("checkpoint_minutes", "keep_checkpoints"):  # which files are kept, not how it trains
            data.pop(key)
        if not self.shrink.enabled:
            data["shrink"] = {"enabled": False}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Rebuild from ``to_dict`` output; unknown keys or versions raise PwmprError."""
        data = dict(data)
        version = data.pop("version", CONFIG_VERSION)  # a config a user writes by hand is read as today's
        if version not in (1, 2, 3, 4, 5, 6, 7, 8, CONFIG_VERSION):
            raise PwmprError(f"config version {version!r} is not readable by this pwmpr (expects {CONFIG_VERSION})")
        if version == 1:
            data = _migrate_v1(data)
        if version in (1, 2):
            data = _migrate_v2(data)
        if version in (1, 2, 3):
            data = _migrate_v3(data)
        if version in (1, 2, 3, 4):
            data = _migrate_v4(data)
        if version in (1, 2, 3, 4, 5):
            data = _migrate_v5(data)
        if version in (1, 2, 3, 4, 5, 6):
            data = _migrate_v6(data)
        return _from_dict(cls, data, "config")

    def save(self, path: Path) -> None:
        """Write as JSON (atomically)."""
        from pwmpr.rundir import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")

    @classmethod
    def load(cls, path: Path | str) -> RunConfig:
        """Read a config JSON file; a missing, unreadable or invalid file raises PwmprError."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        return cls.from_dict(read_json_object(path, "config file", missing=f"config file not found: {path}"))


_SECTION_CLASSES = {"train": TrainConfig, "growth": GrowthConfig, "stop": StopConfig, "shrink": ShrinkConfig}


def section_field(key: str) -> tuple[str, str]:
    """``(section, field)`` of a section's field named alone (``max_phases``) or by its flag with underscores
    (``stop_tol``, ``shrink``); PwmprError for a name that is no field, or the field of more than one section."""
    found: set[tuple[str, str]] = set()
    for section, cls in _SECTION_CLASSES.items():
        for f in dataclasses.fields(cls):
            if key in (f.name, f.metadata.get("flag", "").replace("-", "_")):
                found.add((section, f.name))
    if len(found) == 1:
        return found.pop()
    top = sorted(f.name for f in dataclasses.fields(RunConfig))
    if not found:
        raise PwmprError(f"unknown config field {key!r}; known: {', '.join(top)}, or a field of "
                         f"{', '.join(_SECTION_CLASSES)}")
    where = " or ".join(f"{s}={{{f!r}: ...}}" for s, f in sorted(found))
    raise PwmprError(f"config field {key!r} is in more than one section: pass {where}")


def read_json_object(path: Path, what: str, *, missing: str) -> dict[str, Any]:
    """The JSON object in ``path``; ``missing`` is the error when there is no file, other failures name ``what``."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PwmprError(missing) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PwmprError(f"cannot read {what} {path}: {exc}") from None
    if not isinstance(data, dict):
        raise PwmprError(f"{what} {path} must hold a JSON object")
    return data


def _type_problem(value: Any, hint: Any) -> str | None:
    """What is wrong with ``value`` for the field type ``hint`` (None when it fits), as strict as a config file."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        return _type_problem(value, rest[0]) if len(rest) == 1 else None
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "a whole number"
    if hint is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if hint is str:
        return None if isinstance(value, str) else "a string"
    if dataclasses.is_dataclass(hint) or typing.get_origin(hint) is dict or hint is dict:
        return None if isinstance(value, (dict, hint if isinstance(hint, type) else dict)) \
            else "an object ({...})"
    return None


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise PwmprError(f"{where} must be an object ({{...}}), got {type(data).__name__} {data!r}"[:200])
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise PwmprError(f"unknown key(s) in {where}: {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        want = _type_problem(value, hints.get(key))
        if want is not None:
            name = key if where == "config" else f"{where}.{key}"
            raise PwmprError(f"{name} must be {want}, got {json.dumps(value) if _jsonable(value) else repr(value)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise PwmprError(f"bad value in {where}: {exc}") from None


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True

"""Every option of a tailoring run, its defaults and its checks (``TailorConfig``): what the CLI fills
and ``archsearch.pipeline.run.tailor`` runs."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from archsearch.platform.device import check_device
from archsearch.errors import UserError
from archsearch.sources.models import absolute_model_spec
from archsearch.passes.insert_proxies import parse_skips
from archsearch.train.loop import Length

# Options that may differ between a run and its --resume; every other option must match.
RESUMABLE_FIELDS = ("out", "resume", "progress", "device", "num_workers", "amp", "trust_pickle")

# How long each stage trains when no epoch count is given: until the validation score stops
# improving (docs/design-choices.md, *Stage lengths*). The floors of optimiser steps give a small data
# set enough of them; the caps bound a run whose score keeps creeping up.
ADAPTIVE = {
    "teacher": Length(min_steps=500, max_epochs=40, patience=2, decays=1),
    # the student's score is minus its objective (nats): gains under 1 % of it (at least 0.01) do not
    # keep it training
    "student": Length(min_steps=500, max_epochs=20, patience=2, decays=1, min_delta=0.01, min_delta_share=0.01),
    "retrain": Length(min_steps=250, max_epochs=30, patience=2, decays=1),
}
AUGMENTS = ("auto", "none", "light", "standard")


def default_gamma1(num_blocks: int) -> float:
    """gamma1 when none is given: a third of the number of universal blocks.

    E[C] pulls on a block's gate with gamma1 times that block's share of the MACs, about
    gamma1 / num_blocks, so a fixed gamma1 is right for one depth only. With the scale-free Omega a
    pull of one per block (gamma1 = blocks) closed most gates and left the student 0.6 to 9.7
    validation points under its teacher on MNIST, notMNIST and Omniglot; a third of that kept the
    student at or near the teacher while still closing the gates of the blocks the task does not
    need (docs/design-choices.md, *gamma1*).
    """
    return num_blocks / 3.0


@dataclass
class TailorConfig:
    """Every option of a tailoring run (the CLI fills it; defaults are the built-in default run)."""

    backbone: str | None = None
    model: str | None = None
    weights: str | None = None
    data: str = "mnist-5k"
    out: str | None = None
    input_size: str | None = None
    leaf_modules: tuple[str, ...] = ()
    skips: str = "3"
    gamma1: float | None = None  # None: default_gamma1, from the traced network's universal blocks
    gamma2: float = 10.0
    retrain_gamma2: float = 1.0  # Omega's weight when a pruned network is retrained
    theta: float = 0.05
    theta_sweep: str = "auto"  # thresholds tried at the chosen k while within tolerance: "auto", "none" or a list
    cost: str = "macs"  # what E[C] and "leanest" count: "macs" (DESIGN.md) or "latency" (measured per edge)
    tolerance: float = 0.5
    sweep: str = "auto"
    max_retrains: int = 5
    teacher_epochs: int | None = None  # None: until validation stops improving (ADAPTIVE)
    student_epochs: int | None = None
    retrain_epochs: int | None = None
    batch_size: int = 64
    lr: float = 0.01
    student_lr: float = 0.05
    gate_lr: float = 0.05
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    augment: str = "auto"
    mean: str | None = None  # "0.485,0.456,0.406"; None: the backbone's own, ImageNet's for --model
    std: str | None = None
    max_memory: str | None = None  # "2G"; None: ARCHSEARCH_MAX_MEMORY, else half the available memory
    train_limit: int | None = None
    seed: int = 0
    device: str = "cpu"
    num_workers: int = 0
    amp: bool = False
    fp32_targets: bool = False
    resume: bool = False
    progress: bool = True
    trust_pickle: bool = False  # read --weights files that need full unpickling (they can run code)

    def length(self, stage: str) -> Length:
        """How long ``stage`` ("teacher", "student" or "retrain") trains: the epochs given, else adaptive."""
        epochs = getattr(self, f"{stage}_epochs")
        return ADAPTIVE[stage] if epochs is None else Length(epochs=epochs)

    def normalized(self) -> "TailorConfig":
        """The same options with the model file named absolutely (a resumed run may start elsewhere)."""
        return dataclasses.replace(self, model=absolute_model_spec(self.model)) if self.model else self

    def check(self) -> None:
        """Reject impossible options early, each with one clear line."""
        parse_skips(self.skips)
        for option, value in (("--gamma1", self.gamma1), ("--gamma2", self.gamma2),
                              ("--retrain-gamma2", self.retrain_gamma2), ("--tolerance", self.tolerance),
                              ("--theta", self.theta), ("--lr", self.lr), ("--student-lr", self.student_lr),
                              ("--gate-lr", self.gate_lr), ("--test-fraction", self.test_fraction)):
            if value is not None and not math.isfinite(value):
                raise UserError(f"{option} must be a finite number, not {value}")
        check_seed(self.seed)
        if self.gamma1 is not None and self.gamma1 < 0:
            raise UserError(f"--gamma1 must be 0 or more (0 turns the complexity term off), not {self.gamma1}")
        if self.tolerance < 0:
            raise UserError(f"--tolerance must be 0 or more accuracy points, not {self.tolerance}")
        if not 0 <= self.theta < 1:
            raise UserError(f"--theta must be in [0, 1), not {self.theta}")
        parse_theta_sweep(self.theta_sweep, self.theta)
        if self.train_limit is not None and self.train_limit < 1:
            raise UserError(f"--train-limit must be at least 1, not {self.train_limit}")
        for option, value in (("--teacher-epochs", self.teacher_epochs), ("--student-epochs", self.student_epochs),
                              ("--retrain-epochs", self.retrain_epochs)):
            if value is not None and value < 0:
                raise UserError(f"{option} must be 0 or more, not {value}")
        check_batch_size(self.batch_size)
        for option, value in (("--lr", self.lr), ("--student-lr", self.student_lr), ("--gate-lr", self.gate_lr)):
            if not value > 0:
                raise UserError(f"{option} must be a positive learning rate, not {value}")
        for option, value in (("--gamma2", self.gamma2), ("--retrain-gamma2", self.retrain_gamma2)):
            if not value >= 0:
                raise UserError(f"{option} must be 0 or more (0 turns the teacher term off), not {value}")
        if self.cost not in ("macs", "latency"):
            raise UserError(f"--cost must be 'macs' or 'latency', not {self.cost!r}")
        if self.max_retrains < 1:
            raise UserError(f"--max-retrains must be at least 1, not {self.max_retrains}")
        if not 0 < self.test_fraction < 1:
            raise UserError(f"--test-fraction must be between 0 and 1, not {self.test_fraction}")
        if not 0 < self.val_fraction <= 0.5:
            raise UserError(f"--val-fraction must be more than 0 and at most 0.5, not {self.val_fraction}")
        if self.augment not in AUGMENTS:
            raise UserError(f"--augment must be one of {', '.join(AUGMENTS)}, not {self.augment!r}")
        for option, value in (("--mean", self.mean), ("--std", self.std)):
            if value is not None:
                parse_floats(value, option)
        check_device(self.device)
        if self.sweep != "auto":
            parse_sweep(self.sweep)

    def comparable(self) -> dict:
        """The options a resumed run must share with the run it resumes (what its results depend on)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RESUMABLE_FIELDS}


MAX_SEED = 2 ** 63 - 1  # torch.manual_seed's largest
MAX_BATCH_SIZE = 2 ** 31 - 1


def check_seed(seed: int) -> None:
    """One clear line for a seed torch cannot take."""
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"--seed must be between 0 and {MAX_SEED}, not {seed}")


def check_batch_size(batch_size: int) -> None:
    """One clear line for a batch size no data loader can make."""
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise UserError(f"--batch-size must be between 1 and {MAX_BATCH_SIZE}, not {batch_size}")


AUTO_THETA_SWEEP = (0.15, 0.25)


def parse_theta_sweep(text: str, theta: float) -> list[float]:
    """The thresholds of ``--theta-sweep``: ``"auto"`` → those of 0.15, 0.25 above ``theta``; ``"none"``
    → []; else a rising list between ``theta`` and 1, like ``"0.1,0.2"``."""
    word = text.strip().lower()
    if word in ("auto", "none"):
        return [v for v in AUTO_THETA_SWEEP if v > theta] if word == "auto" else []
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if (not values or not all(math.isfinite(v) for v in values) or values != sorted(set(values))
            or values[0] <= theta or values[-1] >= 1):
        raise UserError(f"--theta-sweep must be 'auto', 'none' or rising thresholds between --theta ({theta:g}) "
                        f"and 1, like 0.1,0.2; not '{text}'")
    return values


def parse_sweep(text: str) -> list[int]:
    """``"0,2,4"`` → [0, 2, 4]."""
    try:
        ks = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise UserError(f"--sweep must be 'auto' or a list of block counts like 0,2,4, not '{text}'") from None
    if not ks or ks[0] < 0:
        raise UserError(f"--sweep values must be 0 or more, not '{text}'")
    return ks


def parse_floats(text: str, option: str) -> list[float]:
    """``"0.485,0.456,0.406"`` → [0.485, 0.456, 0.406]; one clear line for anything else."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise UserError(f"{option} must be one number or one per input channel, like 0.485,0.456,0.406; not '{text}'")
    return values

"""The search: feature extraction, teacher, student and the sweep of pruned networks, on one run's data.

Its results are values: :class:`Yardsticks` (the baselines the choice is judged against) and
:class:`Found` (the trained student, every retrained network and the pick). Every decision (when a
stage stops, k, theta, the pick, the tolerance check) reads the validation split; the test split
only reports networks already chosen.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.fx as fx
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from archsearch.errors import UserError
from archsearch.graph.blockgraph import BlockGraph
from archsearch.graph.gates import alphas
from archsearch.io.checkpoint import load_checkpoint, save_checkpoint
from archsearch.io.jsonfile import read_json_dict
from archsearch.io.atomic import atomic_write_json
from archsearch.passes.codegen import build_student, read_gates
from archsearch.passes.insert_proxies import insert_proxies
from archsearch.passes.measure import apply_edge_seconds, measure_edge_seconds
from archsearch.passes.prune import prune
from archsearch.pipeline.config import TailorConfig, parse_sweep, parse_theta_sweep
from archsearch.pipeline.rundir import RunDir
from archsearch.pipeline.select import Trial, accuracy_floor, bisect_k, choose, first_k
from archsearch.platform.allocator import return_freed_memory
from archsearch.platform.memory_format import training_layout
from archsearch.train import distributed
from archsearch.train.distributed import Dist
from archsearch.train.linear_probe import linear_probe
from archsearch.train.loop import evaluate, run_stage, stage_summary
from archsearch.train.stages import OmegaTeacher, student_stage, teacher_stage, validation_objective

EVAL_BATCH = 256  # images per evaluation batch (no gradients: larger than training's) ...
EVAL_BATCH_BYTES = 32 * 2**20  # ... unless 256 images would take more than this (large inputs, streamed data)
HEAD_LR_FACTOR = 10.0  # the teacher's new classifier learns this much faster than the pre-trained weights


@dataclass
class Loaders:
    """The task's three splits as this rank's data loaders."""

    train: DataLoader
    val: DataLoader
    test: DataLoader


def _loader(dataset, batch: int, workers: int, **options) -> DataLoader:
    """A DataLoader whose worker processes (streamed data) give freed memory back."""
    init = {"worker_init_fn": return_freed_memory} if workers else {}
    return DataLoader(dataset, batch_size=batch, num_workers=workers, **init, **options)


def _loaders(cfg: TailorConfig, data, d: Dist) -> Loaders:
    """Training batches (``--batch-size`` in total, split over ranks) and this rank's evaluation shards.
    Streamed data (larger than the memory budget) is decoded by at least two worker processes."""
    workers = max(cfg.num_workers, 2) if getattr(data, "streaming", False) else cfg.num_workers
    per_rank = max(1, cfg.batch_size // d.world_size)
    drop_last = len(data.train) // d.world_size > per_rank
    val, test = data.val, data.test
    if d.enabled:
        sampler = DistributedSampler(data.train, d.world_size, d.rank, shuffle=True, seed=cfg.seed)
        train = _loader(data.train, per_rank, workers, sampler=sampler, drop_last=drop_last)
        val = Subset(val, range(d.rank, len(val), d.world_size))
        test = Subset(test, range(d.rank, len(test), d.world_size))
    else:
        g = torch.Generator().manual_seed(cfg.seed)
        train = _loader(data.train, per_rank, workers, shuffle=True, generator=g, drop_last=drop_last)
    batch = eval_batch(per_rank, data.input_size)
    return Loaders(train, _loader(val, batch, workers), _loader(test, batch, workers))


def eval_batch(train_batch: int, input_size: tuple[int, int, int]) -> int:
    """Images per evaluation batch: ``EVAL_BATCH``, fewer where that many images would take more than
    ``EVAL_BATCH_BYTES`` as float32 (a 224-px batch of 256 and its prefetched copies cost gigabytes),
    never fewer than a training batch."""
    c, h, w = input_size
    return max(train_batch, min(EVAL_BATCH, EVAL_BATCH_BYTES // (4 * c * h * w)))


def _logits(module: fx.GraphModule) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: module(x)[0]


@dataclass(frozen=True)
class Scores:
    """A network's top-1 accuracy (percent) on the validation and the test split."""

    val: float
    test: float

    def as_dict(self) -> dict:
        return {"val": self.val, "test": self.test}


@dataclass(frozen=True)
class TrialResult:
    """A pruned and retrained network as a value: its record and its graph, whose task-specific
    modules (proxies, classifier) are its own, in their trained state."""

    trial: Trial
    bg: BlockGraph
    key: str  # its stage's identifier: checkpoint name, random streams, the report's stage entry


@dataclass(frozen=True)
class Yardsticks:
    """What the choice is judged against: feature extraction's scores, and the fine-tuned teacher
    (its module, its graph and its scores)."""

    feature_extraction: Scores
    teacher: fx.GraphModule
    teacher_bg: BlockGraph
    scores: Scores

    @property
    def teacher_is_better(self) -> bool:
        """Whether fine-tuning beat feature extraction on validation (or both are perfect): a teacher
        that did not cannot be the yardstick of the choice."""
        fe, t = self.feature_extraction.val, self.scores.val
        return t > fe or t == fe == 100.0


@dataclass(frozen=True)
class Found:
    """What the search found: the trained student's graph and record, every retrained network, and
    the pick (its record, why, whether within tolerance of the teacher on validation, its graph)."""

    trained_bg: BlockGraph
    student: Trial
    trials: tuple[TrialResult, ...]
    chosen: Trial
    reason: str
    within: bool
    final_bg: BlockGraph


@torch.no_grad()
def feature_scale(model: nn.Module, classifier: nn.Module, loader: DataLoader, device: str, batches: int = 4) -> float:
    """Root mean square of what the classifier reads: how much larger than usual this model's features are.
    The classifier's learning rate is divided by its square (a plain gradient step on features 100x
    larger moves the classifier 10,000x too far)."""
    seen: list[torch.Tensor] = []
    handle = classifier.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].detach().float()))
    try:
        for i, (x, _) in enumerate(loader):
            if i == batches:
                break
            model(x.to(device))
    finally:
        handle.remove()
    return float(torch.cat([s.flatten() for s in seen]).pow(2).mean().sqrt()) if seen else 1.0


class Search:
    """The search of one run: feature extraction, teacher, student and the sweep of pruned networks.

    Each stage is a method with its inputs on the object and its result returned; checkpoints make
    every stage resumable. Decisions read validation accuracy only."""

    def __init__(self, cfg: TailorConfig, run: RunDir, bg: BlockGraph, data, d: Dist,
                 log: Callable[[str], None]) -> None:
        self.cfg, self.run, self.bg, self.d, self.log = cfg, run, bg, d, log
        self.device = distributed.device_for(d, cfg.device)
        self.on_cpu = torch.device(self.device).type == "cpu"  # students train proxies' 1x1 convolutions as matrix products
        self.loaders = _loaders(cfg, data, d)
        self.chance_loss = math.log(max(2, data.num_classes))  # cross-entropy of guessing
        self.classifier = bg.g.graph["classifier"]
        self.timings: dict[str, float] = {}
        self.stages: dict[str, dict] = {}
        self.trials: dict[tuple[int, float], TrialResult] = {}
        self.place(bg.gm)
        bg.gm.eval()
        scale = feature_scale(bg.gm, bg.gm.get_submodule(self.classifier), self.loaders.val, self.device)
        self.head_lr_scale = 1.0 / max(1.0, scale) ** 2
        self.feature_rms = scale

    def place(self, module: nn.Module) -> nn.Module:
        """Move a module to this rank's device, in its training layout."""
        return module.to(self.device, memory_format=training_layout(self.device))

    def _fit(self, stage) -> None:
        run_stage(stage, self.loaders.train, self.device, resume=True, progress=self.cfg.progress,
                  seed=self.cfg.seed, d=self.d, amp=self.cfg.amp)
        stage.module.eval()
        self.stages[stage.key] = stage_summary(stage)

    def val_accuracy(self, forward: Callable[[torch.Tensor], torch.Tensor]) -> float:
        """Top-1 accuracy in percent on the validation split: what every decision reads."""
        return evaluate(forward, self.loaders.val, self.device, self.d)

    def scores(self, forward: Callable[[torch.Tensor], torch.Tensor]) -> Scores:
        """Validation and test accuracy of a network already chosen or trained (test only reports)."""
        return Scores(self.val_accuracy(forward), evaluate(forward, self.loaders.test, self.device, self.d))

    def feature_extraction(self, data) -> Scores:
        """Baseline: the pre-trained network frozen, only a new classifier trained (checkpointed). Its
        classifier is where the teacher's starts (linear probing, then fine-tuning)."""
        ckpt = self.run.ckpt("feature-extraction")
        head = self.bg.gm.get_submodule(self.classifier)
        if ckpt.exists():
            saved = load_checkpoint(ckpt)
            head.load_state_dict(saved["head"])
            return Scores(saved["val"], saved["test"])
        clock = time.perf_counter()
        # every rank runs the whole (cheap) probe on the full data, so all agree without communication
        workers, batch = self.loaders.train.num_workers, self.loaders.val.batch_size
        train = _loader(data.train.with_augment("none"), batch, workers)
        evals = {name: _loader(getattr(data, name), batch, workers) for name in ("val", "test")}
        result = linear_probe(self.bg.gm, head, train, evals, self.device, seed=self.cfg.seed,
                              classifier_path=self.classifier)
        head.load_state_dict(result.head.state_dict())
        scores = Scores(result.accuracy["val"], result.accuracy["test"])
        if self.d.is_main:
            save_checkpoint(ckpt, {"head": head.state_dict(), **scores.as_dict()})
        self.timings["feature_extraction"] = time.perf_counter() - clock
        return scores

    def fine_tune_teacher(self) -> tuple[fx.GraphModule, BlockGraph, Scores]:
        """A copy of the pre-trained network with the probed classifier, every weight fine-tuned,
        kept at its best validation accuracy."""
        clock = time.perf_counter()
        teacher_bg = BlockGraph(self.bg.g.copy(), copy.deepcopy(self.bg.gm))
        teacher = self.place(build_student(teacher_bg))
        lr = self.cfg.lr
        stage = teacher_stage(teacher, self.classifier, self.cfg.length("teacher"), lr,
                              lr * HEAD_LR_FACTOR * self.head_lr_scale, self.run.ckpt("teacher"),
                              score=lambda: self.val_accuracy(_logits(teacher)), chance_loss=self.chance_loss)
        self._fit(stage)
        scores = self.scores(_logits(teacher))
        self.timings["teacher"] = time.perf_counter() - clock
        return teacher, teacher_bg, scores

    def _student_stage(self, key: str, name: str, module: fx.GraphModule, bg: BlockGraph, gamma1: float,
                       gamma2: float, targets: OmegaTeacher, length, by_objective: bool):
        cfg = self.cfg
        if by_objective:
            def score() -> float:
                return -validation_objective(module, bg, targets, self.loaders.val, self.device,
                                             gamma1=gamma1, gamma2=gamma2, d=self.d)
        else:
            def score() -> float:
                return self.val_accuracy(_logits(module))
        return student_stage(key, module, bg, targets, length=length, lr=cfg.student_lr,
                             head_lr=cfg.student_lr * self.head_lr_scale, gate_lr=cfg.gate_lr, gamma1=gamma1,
                             gamma2=gamma2, checkpoint=self.run.ckpt(key), score=score, name=name,
                             chance_loss=self.chance_loss)

    def train_student(self, teacher: fx.GraphModule) -> tuple[BlockGraph, Trial, OmegaTeacher]:
        """Proxies, gates and classifier trained on CE + gamma1 E[C] + gamma2 Omega; blocks frozen.
        Kept at its best validation objective (accuracy alone would keep the gates where they began)."""
        clock = time.perf_counter()
        self.bg.gm.get_submodule(self.classifier).load_state_dict(teacher.get_submodule(self.classifier).state_dict())
        targets = OmegaTeacher(teacher, fp32=self.cfg.fp32_targets)
        torch.manual_seed(self.cfg.seed)  # new proxies start alike whether or not earlier stages ran in this process
        student_bg = insert_proxies(self.bg, self.cfg.skips)
        student = self.place(build_student(student_bg, matmul_pointwise=self.on_cpu))
        if self.cfg.cost == "latency":
            self.measure_costs(student_bg)
        self._fit(self._student_stage("student", "student", student, student_bg, self.cfg.gamma1, self.cfg.gamma2,
                                      targets, self.cfg.length("student"), by_objective=True))
        trained_bg = read_gates(student_bg, student.state_dict())
        s = self.scores(_logits(student))
        trial = Trial(-1, s.val, trained_bg.macs(), trained_bg.params(), len(trained_bg.universal()),
                      cost=self._cost(trained_bg), test_accuracy=s.test)
        self.timings["student"] = time.perf_counter() - clock
        return trained_bg, trial, targets

    def _cost(self, bg: BlockGraph) -> float | None:
        return bg.cost() if self.cfg.cost == "latency" else None

    def measure_costs(self, student_bg: BlockGraph) -> None:
        """``--cost latency``: every edge's seconds on this device at the training batch, measured once
        per run and kept in costs.json (a resumed run charges the same costs), the same on every rank."""
        path = self.run.path / "costs.json"
        seconds, error = None, None
        if self.d.is_main:
            try:
                if path.exists():
                    seconds = read_json_dict(path, "start a new run to measure the costs again")
                else:
                    clock = time.perf_counter()
                    per_rank = max(1, self.cfg.batch_size // self.d.world_size)  # what each rank trains on
                    seconds = measure_edge_seconds(student_bg, per_rank, self.device)
                    atomic_write_json(path, seconds)
                    self.timings["measure_costs"] = time.perf_counter() - clock
                    self.log(f"measured {len(seconds) - 1} edges on {self.device} at batch {per_rank}: "
                             f"the original network takes {seconds[''] * 1e3:.1f} ms node by node")
            except Exception as exc:  # every rank stops with rank 0's message instead of waiting for it
                error = str(exc) if isinstance(exc, UserError) else f"measuring the costs failed: {exc!r}"
        seconds, error = distributed.broadcast(self.d, (seconds, error))
        if error:
            raise UserError(error)
        apply_edge_seconds(student_bg, seconds)

    def retrain(self, trained_bg: BlockGraph, targets: OmegaTeacher, k: int, theta: float | None = None) -> Trial:
        """Prune the k lowest-gated blocks and the proxies gated under theta (default ``--theta``),
        retrain a copy of the student's proxies and classifier with gamma1 = 0 and Omega weighed by
        ``--retrain-gamma2``, and record the result."""
        theta = self.cfg.theta if theta is None else theta
        pruned = prune(trained_bg, k, theta).with_own_task_modules()
        module = self.place(build_student(pruned, matmul_pointwise=self.on_cpu))
        key = f"retrain-k{k}" + (f"-theta{theta!r}" if theta != self.cfg.theta else "")  # repr: exact, unique
        name = f"retrain k={k}" + (f" theta={theta:g}" if theta != self.cfg.theta else "")
        self._fit(self._student_stage(key, name, module, pruned, 0.0, self.cfg.retrain_gamma2, targets,
                                      self.cfg.length("retrain"),
                                      by_objective=False))
        s = self.scores(_logits(module))
        trial = Trial(k, s.val, pruned.macs(), pruned.params(), len(pruned.universal()), theta,
                      cost=self._cost(pruned), test_accuracy=s.test)
        self.trials[(k, theta)] = TrialResult(trial, read_gates(pruned, module.state_dict()), key)
        self.log(f"  {trial.label}: {trial.accuracy:.2f} % (validation) with {trial.blocks_kept}/"
                 f"{len(self.bg.universal())} blocks, {len(pruned.proxies())} proxies, {trial.macs / 1e6:.2f} M MACs"
                 + (f", {trial.cost:.1%} of the original's measured time" if trial.cost is not None else ""))
        return trial

    def sweep(self, trained_bg: BlockGraph, targets: OmegaTeacher, teacher_val: float) -> None:
        """Retrain for the ks of ``--sweep``: a bisection from the student's own verdict, or a list."""
        clock = time.perf_counter()
        num_blocks = len(self.bg.universal())
        if self.cfg.sweep == "auto":
            gate = alphas(trained_bg)
            off = sum(1 for e in trained_bg.universal() if gate[e] < 0.5)
            within = lambda k: self.retrain(trained_bg, targets, k).accuracy >= teacher_val - self.cfg.tolerance  # noqa: E731
            bisect_k(first_k(off, num_blocks), num_blocks, within, self.cfg.max_retrains)
        else:
            for k in parse_sweep(self.cfg.sweep):
                self.retrain(trained_bg, targets, min(k, num_blocks))
        self.timings["sweep"] = time.perf_counter() - clock

    def refine_theta(self, trained_bg: BlockGraph, targets: OmegaTeacher, student: Trial, teacher_val: float) -> None:
        """At the chosen k, prune weak proxies harder (``--theta-sweep``) while the retrained network
        still reaches the choice's accuracy floor (``accuracy_floor``): proxies cost more time per MAC
        than blocks, so the leanest network may keep fewer of them than the paper's threshold leaves."""
        trials = [r.trial for r in self.trials.values()]
        trial, _, _ = choose(trials, student, teacher_val, self.cfg.tolerance)
        if trial.k < 0:
            return
        floor, _ = accuracy_floor(trials, student, teacher_val, self.cfg.tolerance)
        clock = time.perf_counter()
        live = set(prune(trained_bg, trial.k, trial.theta).proxies())
        for theta in parse_theta_sweep(self.cfg.theta_sweep, self.cfg.theta):
            proxies = set(prune(trained_bg, trial.k, theta).proxies())
            if proxies == live:  # no proxy between the thresholds: the same network
                continue
            live = proxies
            if self.retrain(trained_bg, targets, trial.k, theta).accuracy < floor:
                break
        self.timings["theta_sweep"] = time.perf_counter() - clock

    def choose(self, trained_bg: BlockGraph, student: Trial, teacher_val: float) -> tuple[Trial, str, bool, BlockGraph]:
        """The chosen network's trial, the reason, whether within tolerance (all on validation), and its graph."""
        trial, reason, within = choose([r.trial for r in self.trials.values()], student, teacher_val, self.cfg.tolerance)
        if trial.k == -1:
            return trial, reason, within, prune(trained_bg, 0, theta=0.0)
        return trial, reason, within, self.trials[(trial.k, trial.theta)].bg


    def yardsticks(self, data, network: str) -> Yardsticks:
        """Feature extraction, then the teacher fine-tuned from its classifier (``network`` names the
        source network in the log)."""
        fe = self.feature_extraction(data)
        self.log(f"feature extraction (frozen {network}, new classifier): {fe.val:.2f} % validation, "
                 f"{fe.test:.2f} % test")
        teacher, teacher_bg, scores = self.fine_tune_teacher()
        stage = self.stages["teacher"]
        self.log(f"teacher (fine-tuned {network}): {scores.val:.2f} % validation, {scores.test:.2f} % test "
                 f"({stage['epochs']} epochs, best {stage['best_epoch']})")
        return Yardsticks(fe, teacher, teacher_bg, scores)

    def find(self, yardsticks: Yardsticks) -> Found:
        """Student, sweep over k, theta refinement at the chosen k, and the pick."""
        trained_bg, student, targets = self.train_student(yardsticks.teacher)
        gate = alphas(trained_bg)
        self.log(f"student: {student.accuracy:.2f} % validation; universal gates "
                 + " ".join(f"{gate[e]:.2f}" for e in trained_bg.universal()))
        teacher_val = yardsticks.scores.val
        self.sweep(trained_bg, targets, teacher_val)
        self.refine_theta(trained_bg, targets, student, teacher_val)
        chosen, reason, within, final_bg = self.choose(trained_bg, student, teacher_val)
        trials = tuple(sorted(self.trials.values(), key=lambda r: (r.trial.k, r.trial.theta)))
        return Found(trained_bg, student, trials, chosen, reason, within, final_bg)

"""The NetTailor pipeline, as one function over a config object.

trace → BlockGraph → new classifier → feature extraction and teacher fine-tune → insert proxies →
student training → (prune k → retrain) for the ks of the sweep → pick the leanest within tolerance
→ slim module → report, task pack and picture in the run directory.

Three splits: every decision (when a stage stops, k, theta, the pick, the tolerance check) reads
the validation split; the test split only reports networks already chosen.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.fx as fx
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from archsearch.advice import not_faster
from archsearch.allocator import return_freed_memory
from archsearch.config import TailorConfig, default_gamma1, parse_floats, parse_sweep, parse_theta_sweep
from archsearch.data import describe, load_task_data
from archsearch.data.raw import RawData
from archsearch.data.memory import peak_rss_bytes
from archsearch.errors import RunFailed, UserError
from archsearch.graph.blockgraph import BlockGraph
from archsearch.graph.classifier import replace_classifier
from archsearch.graph.gates import alphas
from archsearch.graph.serialize import ARCHITECTURE_ATTR, architecture_dict
from archsearch.graph.trace import trace
from archsearch.io.atomic import atomic_torch_save, atomic_write_json
from archsearch.io.checkpoint import load_checkpoint, save_checkpoint
from archsearch.io.jsonfile import read_json_dict
from archsearch.io.pack import tensor_digest, write_pack, write_universal
from archsearch.latency import latency_setting, median_latency
from archsearch.layout import DEPLOYMENT_LAYOUT, deployable_layout, layout_name, training_layout
from archsearch.models import SourceModel, resolve_model
from archsearch.passes.codegen import build_module, read_gates
from archsearch.passes.insert_proxies import insert_proxies
from archsearch.passes.measure import apply_edge_seconds, measure_edge_seconds
from archsearch.passes.prune import prune, removed_blocks
from archsearch.render import render, to_dot
from archsearch.rundir import RunDir, run_dir
from archsearch.select import Trial, accuracy_floor, bisect_k, choose, first_k
from archsearch.train import distributed
from archsearch.train.distributed import Dist
from archsearch.train.linear_probe import linear_probe
from archsearch.train.loop import evaluate, run_stage, stage_summary
from archsearch.train.stages import OmegaTeacher, student_stage, teacher_stage, validation_objective

EVAL_BATCH = 256  # images per evaluation batch (no gradients: larger than training's) ...
EVAL_BATCH_BYTES = 32 * 2**20  # ... unless 256 images would take more than this (large inputs, streamed data)
PROBE_IMAGES = 8  # images of the check that the slim module equals the pruned student
LATENCY_BATCHES = (1, 32)
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
        teacher = self.place(build_module(teacher_bg, "student", "all"))
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
        student = self.place(build_module(student_bg, "student", "all"))
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
        module = self.place(build_module(pruned, "student", "all"))
        key = f"retrain-k{k}" + (f"-theta{theta!r}" if theta != self.cfg.theta else "")  # repr: exact, unique
        name = f"retrain k={k}" + (f" theta={theta:g}" if theta != self.cfg.theta else "")
        self._fit(self._student_stage(key, name, module, pruned, 0.0, self.cfg.retrain_gamma2, targets,
                                      self.cfg.length("retrain"),
                                      by_objective=False))
        s = self.scores(_logits(module))
        trial = Trial(k, s.val, pruned.macs(), pruned.params(), len(pruned.universal()), theta,
                      cost=self._cost(pruned), test_accuracy=s.test)
        self.trials[(k, theta)] = TrialResult(trial, read_gates(pruned, module.state_dict()))
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


def _mean_std(cfg: TailorConfig, source: SourceModel) -> tuple[list[float], list[float]]:
    """``--mean``/``--std`` where given, else the source network's own normalisation."""
    channels = source.input_shape[0]
    defaults = [list(source.mean), list(source.std)]
    if channels == 1 and len(defaults[0]) == 3:  # a grey input to a network of colour statistics: their average
        defaults = [[sum(v) / 3] for v in defaults]
    mean = parse_floats(cfg.mean, "--mean") if cfg.mean else defaults[0]
    std = parse_floats(cfg.std, "--std") if cfg.std else defaults[1]
    return mean, std


def tailor(cfg: TailorConfig, log: Callable[[str], None] = print, *, source: SourceModel | None = None,
           raw: RawData | None = None) -> dict:
    """Run the whole NetTailor pipeline; returns the report (also written to report.json).

    ``source`` (a network object with its input description) replaces ``cfg.backbone``/``cfg.model``,
    and ``raw`` (images already opened) replaces ``cfg.data``: how the Python API passes objects.

    Raises :class:`RunFailed` (after writing the report) when the fine-tuned teacher is no better
    than feature extraction on the validation split: it cannot be the yardstick of the choice."""
    cfg.check()
    cfg = cfg.normalized()
    torch.manual_seed(cfg.seed)
    if source is None:
        source = resolve_model(cfg.backbone, cfg.model, cfg.weights, cfg.input_size, trust_pickle=cfg.trust_pickle)
    mean, std = _mean_std(cfg, source)
    source = dataclasses.replace(source, mean=tuple(mean), std=tuple(std))
    data = load_task_data(raw if raw is not None else cfg.data, input_size=source.input_shape, mean=mean, std=std, seed=cfg.seed,
                          test_fraction=cfg.test_fraction, val_fraction=cfg.val_fraction, augment=cfg.augment,
                          max_memory=cfg.max_memory, train_limit=cfg.train_limit)
    bg = replace_classifier(trace(source.model, source.input_shape, cfg.leaf_modules), data.num_classes)
    if cfg.gamma1 is None:
        cfg = dataclasses.replace(cfg, gamma1=default_gamma1(len(bg.universal())))  # the caller's stays as given
    d = distributed.init_from_env(cfg.device)
    try:
        report = _tailor(cfg, source, data, bg, d, log if d.is_main else (lambda m: None))
        distributed.barrier(d)  # no rank tears the group down while rank 0 still writes outputs
        return report
    finally:
        distributed.shutdown(d)


def _failed_teacher(run: RunDir, report: dict, fe: Scores, teacher: Scores) -> RunFailed:
    message = (f"the fine-tuned teacher ({teacher.val:.2f} % on validation) is no better than feature extraction "
               f"({fe.val:.2f} %): it cannot be the yardstick of the choice, so no network was chosen. Try another "
               "--lr (the pre-trained weights' rate), more data, or --augment; report.json has each stage's history")
    atomic_write_json(run.path / "report.json", {**report, "status": "failed", "failure": message})
    return RunFailed(message)


def _tailor(cfg: TailorConfig, source: SourceModel, data, bg: BlockGraph, d: Dist, log: Callable[[str], None]) -> dict:
    classifier = bg.g.graph["classifier"]
    digest_before = tensor_digest(bg.gm, skip=(classifier + ".",))
    inputs = {"universal_sha256": digest_before, "data_sha256": data.digest()} if d.is_main else {}  # rank 0 checks
    run = run_dir(cfg, d, inputs)
    log(f"run directory: {run.path}" + (f" ({d.world_size} processes)" if d.enabled else ""))
    if cfg.model and not cfg.weights:
        log(f"note: --model without --weights: the blocks keep the weights {cfg.model} gave them; "
            "if it builds an untrained network, pass its pre-trained state dict with --weights")
    log(f"data: {describe(data)}; training augmentation: {data.augment}")
    log(f"gamma1: {cfg.gamma1:g} for {len(bg.universal())} universal blocks "
        f"(default: a third of the blocks, {default_gamma1(len(bg.universal())):g})")

    search = Search(cfg, run, bg, data, d, log)
    fe = search.feature_extraction(data)
    log(f"feature extraction (frozen {source.name}, new classifier): {fe.val:.2f} % validation, {fe.test:.2f} % test")
    teacher, teacher_bg, teacher_scores = search.fine_tune_teacher()
    log(f"teacher (fine-tuned {source.name}): {teacher_scores.val:.2f} % validation, {teacher_scores.test:.2f} % test "
        f"({search.stages['teacher']['epochs']} epochs, best {search.stages['teacher']['best_epoch']})")
    base = {
        "backbone": source.name, "weights": source.weights, "dataset": data.name, "num_classes": data.num_classes,
        "train_images": len(data.train), "val_images": len(data.val), "test_images": len(data.test),
        "classes": list(data.classes), "input_shape": list(source.input_shape),
        "mean": list(source.mean), "std": list(source.std), "augment": data.augment,
        "streaming": bool(getattr(data, "streaming", False)), "selection_split": "validation",
        "feature_extraction": fe.as_dict(), "teacher": {**teacher_scores.as_dict(), "stage": search.stages["teacher"]},
        "feature_extraction_accuracy": fe.test, "teacher_accuracy": teacher_scores.test,
        "config": cfg.comparable(),
    }
    if teacher_scores.val < fe.val or (teacher_scores.val == fe.val < 100.0):
        if d.is_main:
            raise _failed_teacher(run, base, fe, teacher_scores)
        raise RunFailed("the teacher is no better than feature extraction")

    trained_bg, student, targets = search.train_student(teacher)
    gate = alphas(trained_bg)
    log(f"student: {student.accuracy:.2f} % validation; universal gates "
        + " ".join(f"{gate[e]:.2f}" for e in trained_bg.universal()))
    search.sweep(trained_bg, targets, teacher_scores.val)
    search.refine_theta(trained_bg, targets, student, teacher_scores.val)
    chosen, reason, within, final_bg = search.choose(trained_bg, student, teacher_scores.val)
    gates_everywhere = distributed.all_gather(d, [a["logit"] for _, a in trained_bg.iter_attrs(("universal", "proxy"))])
    artifacts = _export(cfg, search, source, teacher_bg, final_bg, bg, d)
    if not d.is_main:
        return {}
    warnings = [w for w in (not_faster(artifacts["latency"]),) if w]
    for warning in warnings:
        log(f"warning: {warning}")
    slim = artifacts["slim"]
    arch = architecture_dict(trained_bg, final_bg, name=f"{source.name} → {data.name}")
    setattr(slim, ARCHITECTURE_ATTR, json.dumps(arch, sort_keys=True))
    atomic_write_json(run.path / "architecture.json", arch)
    try:
        render(to_dot(arch), run.path / "architecture.svg")
    except UserError as exc:  # Graphviz missing or failing: keep the run, leave the DOT text
        render(to_dot(arch), run.path / "architecture.dot")
        log(f"note: {exc}")
    atomic_torch_save(slim, run.path / "tailored.pt")
    tailored = artifacts["scores"]
    report = {
        **base,
        "student": {**student.as_dict(), "stage": search.stages["student"]},
        "tailored": tailored.as_dict(),
        "student_accuracy": student.test_accuracy, "tailored_accuracy": tailored.test,
        "chosen_k": chosen.k, "chosen_theta": chosen.theta,
        "within_tolerance": within, "tolerance_judged_on": "validation", "selection": reason,
        "tolerance": cfg.tolerance, "warnings": warnings, "cost": cfg.cost, "status": "ok",
        **({"tailored_cost_share": chosen.cost} if chosen.cost is not None else {}),
        "original_macs": bg.total_macs, "tailored_macs": final_bg.macs(),
        "original_params": bg.total_params, "tailored_params": final_bg.params(),
        "task_specific_params": final_bg.task_params(),
        "universal_blocks_total": len(bg.universal()), "universal_blocks_kept": len(final_bg.universal()),
        "removed_blocks": removed_blocks(trained_bg, final_bg),
        "sweep": [r.trial.as_dict() | {"stage": search.stages.get(_trial_key(cfg, r.trial))}
                  for r in sorted(search.trials.values(), key=lambda r: (r.trial.k, r.trial.theta))],
        "universal_sha256": digest_before,
        "universal_unchanged": digest_before == tensor_digest(bg.gm, skip=(classifier + ".",)),
        "slim_vs_pruned_student_max_abs_diff": artifacts["slim_error"],
        "latency_seconds": artifacts["latency"], "latency_on": latency_setting(search.device),
        "memory_format": layout_name(artifacts["layout"]),
        "feature_rms": search.feature_rms,
        "stage_seconds": search.timings,
        "distributed": {"world_size": d.world_size,
                        "gates_identical_across_ranks": all(g == gates_everywhere[0] for g in gates_everywhere)},
    }
    universal_sha256 = write_universal(bg.gm, classifier, run.path / "universal.pt")
    summary_keys = ("backbone", "dataset", "teacher_accuracy", "tailored_accuracy", "original_macs", "tailored_macs",
                    "original_params", "tailored_params", "task_specific_params")
    report["task_pack_bytes"] = write_pack(
        slim, bg.gm, classifier, universal_sha256, run.path / "task.pack",
        {"name": data.name, "classes": list(data.classes), "input_shape": list(source.input_shape),
         "mean": list(source.mean), "std": list(source.std), "memory_format": report["memory_format"],
         "report": {k: report[k] for k in summary_keys}})
    report["universal_bytes"] = (run.path / "universal.pt").stat().st_size
    report["peak_rss_bytes"] = peak_rss_bytes()
    atomic_write_json(run.path / "report.json", report)
    report["run_dir"] = str(run.path)
    return report


def _trial_key(cfg: TailorConfig, trial: Trial) -> str:
    return f"retrain-k{trial.k}" + (f"-theta{trial.theta!r}" if trial.theta != cfg.theta else "")


def _export(cfg: TailorConfig, search: Search, source: SourceModel, teacher_bg: BlockGraph, final_bg: BlockGraph,
            bg: BlockGraph, d: Dist) -> dict:
    """The slim module of the chosen network in the layout it runs fastest in, its scores, its check
    against the pruned student, and the latency of original and tailored networks side by side."""
    device = search.device
    pruned_student = build_module(final_bg, "student", "all").eval()
    probe = next(iter(search.loaders.test))[0][:PROBE_IMAGES].to(device)
    original_module = build_module(teacher_bg, "slim", "logits").eval()
    slim = build_module(final_bg, "slim", "logits", memory_format=DEPLOYMENT_LAYOUT).eval()
    deployed, refused = deployable_layout([original_module, slim], probe, device)
    if refused:
        search.log(f"note: this network does not run in {layout_name(DEPLOYMENT_LAYOUT)} ({refused}); it is "
                   f"emitted, timed and saved {layout_name(deployed)}")
        slim = build_module(final_bg, "slim", "logits", memory_format=deployed).eval()
    scores = search.scores(slim)
    out = {"slim": slim, "scores": scores, "layout": deployed}
    if not d.is_main:
        return out
    with torch.no_grad():
        out["slim_error"] = float((slim(probe) - pruned_student.to(device)(probe)[0]).abs().max())
    for module in (original_module, slim):  # both timed as they are best run: in the deployment layout
        module.to(device, memory_format=deployed)
    out["latency"] = {f"batch{b}": median_latency({"original": original_module, "tailored": slim}, source.input_shape,
                                                  b, device=device, memory_format=deployed) for b in LATENCY_BATCHES}
    for module in (slim, bg.gm):  # saved on the CPU in its layout: torch.load(...)(images) runs as measured
        module.to("cpu", memory_format=deployed)
    return out

"""The NetTailor pipeline, as one function over a config object.

trace → BlockGraph → new classifier → teacher fine-tune → insert proxies → student training →
(prune k → retrain) for the ks of the sweep → pick the leanest within tolerance → slim module →
report, task pack and picture in the run directory.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import time
from typing import Callable

import torch
import torch.fx as fx
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from archsearch.advice import not_faster, short_retraining, undertrained_teacher
from archsearch.config import TailorConfig, default_gamma1, parse_sweep, parse_theta_sweep
from archsearch.data import describe, load_task_data
from archsearch.errors import UserError
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
from archsearch.models import resolve_model
from archsearch.nn.pointwise import kernel
from archsearch.passes.codegen import GATES, build_module, read_gates
from archsearch.passes.insert_proxies import insert_proxies
from archsearch.passes.measure import apply_edge_seconds, measure_edge_seconds
from archsearch.passes.prune import prune, removed_blocks
from archsearch.render import render, to_dot
from archsearch.rundir import RunDir, run_dir
from archsearch.select import Trial, accuracy_floor, bisect_k, choose, first_k
from archsearch.train import distributed
from archsearch.train.distributed import Dist
from archsearch.train.linear_probe import linear_probe
from archsearch.train.loop import evaluate, run_stage
from archsearch.train.stages import student_stage, task_prefixes, teacher_stage


def _loaders(cfg: TailorConfig, data, d: Dist) -> tuple[DataLoader, DataLoader]:
    """Training batches (``--batch-size`` in total, split over ranks) and this rank's test shard."""
    train, test = data.train, data.test
    per_rank = max(1, cfg.batch_size // d.world_size)
    drop_last = len(train) // d.world_size > per_rank
    if d.enabled:
        sampler = DistributedSampler(train, d.world_size, d.rank, shuffle=True, seed=cfg.seed)
        train_loader = DataLoader(train, batch_size=per_rank, sampler=sampler, drop_last=drop_last,
                                  num_workers=cfg.num_workers)
        test = Subset(test, range(d.rank, len(test), d.world_size))
    else:
        g = torch.Generator().manual_seed(cfg.seed)
        train_loader = DataLoader(train, batch_size=per_rank, shuffle=True, generator=g, drop_last=drop_last,
                                  num_workers=cfg.num_workers)
    return train_loader, DataLoader(test, batch_size=max(per_rank, 256), num_workers=cfg.num_workers)


def _logits(module: fx.GraphModule) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: module(x)[0]


class _Pipeline:
    """The stages of one run, sharing its data loaders, teacher and checkpoints."""

    def __init__(self, cfg: TailorConfig, run: RunDir, bg: BlockGraph, data, d: Dist,
                 log: Callable[[str], None]) -> None:
        self.cfg, self.run, self.bg, self.d, self.log = cfg, run, bg, d, log
        self.device = distributed.device_for(d, cfg.device)
        self.train_loader, self.test_loader = _loaders(cfg, data, d)
        self.timings: dict[str, float] = {}
        self.trials: dict[tuple[int, float], tuple[Trial, BlockGraph, dict]] = {}
        # Set by the stages, in the order tailor() runs them: fine_tune_teacher, then train_student.
        self.teacher_bg: BlockGraph | None = None
        self.teacher: fx.GraphModule | None = None
        self.teacher_accuracy: float | None = None
        self.student: fx.GraphModule | None = None
        self.trained_bg: BlockGraph | None = None  # the student's graph with its trained gate logits
        self.trained_state: dict | None = None  # the student's task-specific tensors
        self.student_trial: Trial | None = None
        self.place(bg.gm)

    @property
    def layout(self) -> torch.memory_format:
        """The memory format this run trains in on its device."""
        return training_layout(self.device)

    def place(self, module: nn.Module) -> nn.Module:
        """Move a module to this rank's device, in its layout."""
        return module.to(self.device, memory_format=self.layout)

    def _fit(self, stage) -> None:
        run_stage(stage, self.train_loader, self.device, resume=True, progress=self.cfg.progress, seed=self.cfg.seed,
                  d=self.d, amp=self.cfg.amp)
        stage.module.eval()

    def accuracy(self, forward: Callable[[torch.Tensor], torch.Tensor]) -> float:
        """Top-1 accuracy in percent of ``forward`` on the task's test split."""
        return evaluate(forward, self.test_loader, self.device, self.d)

    def fine_tune_teacher(self) -> float:
        """A copy of the pre-trained network, every weight fine-tuned with the new classifier."""
        clock = time.perf_counter()
        self.teacher_bg = BlockGraph(self.bg.g.copy(), copy.deepcopy(self.bg.gm))
        self.teacher = build_module(self.teacher_bg, "student", "all")
        self._fit(teacher_stage(self.teacher, self.cfg.teacher_epochs, self.cfg.lr, self.run.ckpt("teacher")))
        self.teacher_accuracy = self.accuracy(_logits(self.teacher))
        self.timings["teacher"] = time.perf_counter() - clock
        return self.teacher_accuracy

    def feature_extraction(self, data) -> float:
        """Baseline: the pre-trained network frozen, only a new classifier trained (checkpointed)."""
        ckpt = self.run.ckpt("feature-extraction")
        if ckpt.exists():
            return float(load_checkpoint(ckpt)["accuracy"])
        clock = time.perf_counter()
        # every rank runs the whole (cheap) probe on the full data, so all agree without communication
        train = DataLoader(data.train, batch_size=256, num_workers=self.cfg.num_workers)
        test = DataLoader(data.test, batch_size=256, num_workers=self.cfg.num_workers)
        classifier = self.bg.gm.get_submodule(self.bg.g.graph["classifier"])
        accuracy = linear_probe(self.bg.gm, classifier, train, test, self.device, seed=self.cfg.seed)
        if self.d.is_main:
            save_checkpoint(ckpt, {"accuracy": accuracy})
        self.timings["feature_extraction"] = time.perf_counter() - clock
        return accuracy

    def _student_stage(self, name: str, module: fx.GraphModule, bg: BlockGraph, epochs: int, gamma1: float):
        cfg = self.cfg
        checkpoint = self.run.ckpt(name.replace(" k=", "-k").replace(" theta=", "-theta"))  # retrain-k3-theta0.15
        return student_stage(name, module, bg, self.teacher, epochs=epochs, lr=cfg.student_lr, gate_lr=cfg.gate_lr,
                             gamma1=gamma1, gamma2=cfg.gamma2, checkpoint=checkpoint, fp32_targets=cfg.fp32_targets)

    def _task_state(self, module: fx.GraphModule) -> dict:
        return {k: v.clone() for k, v in module.state_dict().items() if k.startswith(task_prefixes(self.bg))}

    def train_student(self) -> Trial:
        """Proxies, gates and classifier trained on CE + gamma1 E[C] + gamma2 Omega; blocks frozen."""
        clock = time.perf_counter()
        classifier = self.bg.g.graph["classifier"]
        self.bg.gm.get_submodule(classifier).load_state_dict(self.teacher.get_submodule(classifier).state_dict())
        torch.manual_seed(self.cfg.seed)  # new proxies start alike whether or not earlier stages ran in this process
        student_bg = insert_proxies(self.bg, self.cfg.skips)
        self.student = self.place(build_module(student_bg, "student", "all"))
        if self.cfg.cost == "latency":
            self.measure_costs(student_bg)
        self._fit(self._student_stage("student", self.student, student_bg, self.cfg.student_epochs, self.cfg.gamma1))
        self.trained_bg = read_gates(student_bg, self.student.state_dict())
        self.trained_state = self._task_state(self.student)
        self.student_trial = Trial(-1, self.accuracy(_logits(self.student)), self.trained_bg.macs(),
                                   self.trained_bg.params(), len(self.trained_bg.universal()),
                                   cost=self._cost(self.trained_bg))
        self.timings["student"] = time.perf_counter() - clock
        return self.student_trial

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

    def retrain(self, k: int, theta: float | None = None) -> Trial:
        """Prune the k lowest-gated blocks and the proxies gated under theta (default ``--theta``),
        retrain with gamma1 = 0, and record the result."""
        theta = self.cfg.theta if theta is None else theta
        self.student.load_state_dict(self.trained_state, strict=False)
        pruned = prune(self.trained_bg, k, theta)
        module = self.place(build_module(pruned, "student", "all"))
        name = f"retrain k={k}" + (f" theta={theta!r}" if theta != self.cfg.theta else "")  # repr: exact, unique
        self._fit(self._student_stage(name, module, pruned, self.cfg.retrain_epochs, 0.0))
        trial = Trial(k, self.accuracy(_logits(module)), pruned.macs(), pruned.params(), len(pruned.universal()),
                      theta, cost=self._cost(pruned))
        state = self._task_state(module)
        self.trials[(k, theta)] = (trial, read_gates(pruned, state), state)
        self.log(f"  {trial.label}: {trial.accuracy:.2f} % with {trial.blocks_kept}/{len(self.bg.universal())} "
                 f"blocks, {len(pruned.proxies())} proxies, {trial.macs / 1e6:.2f} M MACs"
                 + (f", {trial.cost:.1%} of the original's measured time" if trial.cost is not None else ""))
        return trial

    def within_tolerance(self, k: int) -> bool:
        """Retrain at k; within tolerance of the teacher? (the sweep's test)"""
        return self.retrain(k).accuracy >= self.teacher_accuracy - self.cfg.tolerance

    def refine_theta(self) -> None:
        """At the chosen k, prune weak proxies harder (``--theta-sweep``) while the retrained network
        still reaches the choice's accuracy floor (``accuracy_floor``: the teacher's tolerance, or
        when no network reached it, the tolerance under the most accurate one tried): proxies cost
        more time per MAC than blocks, so the leanest network may keep fewer of them than the paper's
        threshold leaves."""
        trials = [t for t, _, _ in self.trials.values()]
        trial, _, _ = choose(trials, self.student_trial, self.teacher_accuracy, self.cfg.tolerance)
        if trial.k < 0:
            return
        floor, _ = accuracy_floor(trials, self.student_trial, self.teacher_accuracy, self.cfg.tolerance)
        clock = time.perf_counter()
        live = set(prune(self.trained_bg, trial.k, trial.theta).proxies())
        for theta in parse_theta_sweep(self.cfg.theta_sweep, self.cfg.theta):
            proxies = set(prune(self.trained_bg, trial.k, theta).proxies())
            if proxies == live:  # no proxy between the thresholds: the same network
                continue
            live = proxies
            if self.retrain(trial.k, theta).accuracy < floor:
                break
        self.timings["theta_sweep"] = time.perf_counter() - clock

    def sweep(self) -> None:
        """Retrain for the ks of ``--sweep``: a bisection from the student's own verdict, or a list."""
        clock = time.perf_counter()
        num_blocks = len(self.bg.universal())
        if self.cfg.sweep == "auto":
            gate = alphas(self.trained_bg)
            off = sum(1 for e in self.trained_bg.universal() if gate[e] < 0.5)
            bisect_k(first_k(off, num_blocks), num_blocks, self.within_tolerance, self.cfg.max_retrains)
        else:
            for k in parse_sweep(self.cfg.sweep):
                self.retrain(min(k, num_blocks))
        self.timings["sweep"] = time.perf_counter() - clock

    def choose(self) -> tuple[Trial, str, bool, BlockGraph]:
        """The chosen network's trial, the reason, whether within tolerance, and its BlockGraph (state loaded)."""
        trial, reason, within = choose([t for t, _, _ in self.trials.values()], self.student_trial,
                                       self.teacher_accuracy, self.cfg.tolerance)
        if trial.k == -1:
            final_bg, state = prune(self.trained_bg, 0, theta=0.0), self.trained_state
        else:
            _, final_bg, state = self.trials[(trial.k, trial.theta)]
        self.student.load_state_dict({k: v for k, v in state.items() if not k.startswith(GATES)}, strict=False)
        return trial, reason, within, final_bg


def tailor(cfg: TailorConfig, log: Callable[[str], None] = print) -> dict:
    """Run the whole NetTailor pipeline; returns the report (also written to report.json)."""
    cfg.check()
    torch.manual_seed(cfg.seed)
    source = resolve_model(cfg.backbone, cfg.model, cfg.weights, cfg.input_size)
    data = load_task_data(cfg.data, input_size=source.input_shape, mean=source.mean, std=source.std,
                          seed=cfg.seed, test_fraction=cfg.test_fraction, train_limit=cfg.train_limit)
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


def _tailor(cfg: TailorConfig, source, data, bg: BlockGraph, d: Dist, log: Callable[[str], None]) -> dict:
    classifier = bg.g.graph["classifier"]
    digest_before = tensor_digest(bg.gm, skip=(classifier + ".",))
    inputs = {"universal_sha256": digest_before, "data_sha256": data.digest()} if d.is_main else {}  # rank 0 checks
    run = run_dir(cfg, d, inputs)
    log(f"run directory: {run.path}" + (f" ({d.world_size} processes)" if d.enabled else ""))
    if cfg.model and not cfg.weights:
        log(f"note: --model without --weights: the blocks keep the weights {cfg.model} gave them; "
            "if it builds an untrained network, pass its pre-trained state dict with --weights")
    log(f"data: {describe(data)}")
    log(f"gamma1: {cfg.gamma1:g} for {len(bg.universal())} universal blocks "
        f"(default: one per block, {default_gamma1(len(bg.universal())):g})")

    p = _Pipeline(cfg, run, bg, data, d, log)
    feature_accuracy = p.feature_extraction(data)
    log(f"feature extraction (frozen {source.name}, new classifier): {feature_accuracy:.2f} %")
    log(f"teacher (fine-tuned {source.name}): {p.fine_tune_teacher():.2f} %")
    warning = undertrained_teacher(feature_accuracy, p.teacher_accuracy, cfg.teacher_epochs)
    warnings = [warning] if warning else []
    if warning:
        log(f"warning: {warning}")
    student = p.train_student()
    gate = alphas(p.trained_bg)
    log(f"student: {student.accuracy:.2f} %; universal gates "
        + " ".join(f"{gate[e]:.2f}" for e in p.trained_bg.universal()))
    p.sweep()
    p.refine_theta()
    chosen, reason, within, final_bg = p.choose()
    gates_everywhere = distributed.all_gather(d, [a["logit"] for _, a in p.trained_bg.iter_attrs(("universal", "proxy"))])

    pruned_student = build_module(final_bg, "student", "all").eval()
    probe = next(iter(p.test_loader))[0][:8].to(p.device)
    original_module = build_module(p.teacher_bg, "slim", "logits").eval()
    if torch.device(p.device).type == "cpu":  # built here, where its one-time note shows (the layout probe is quiet)
        kernel()
    slim = build_module(final_bg, "slim", "logits", memory_format=DEPLOYMENT_LAYOUT).eval()
    deployed, refused = deployable_layout([original_module, slim], probe, p.device)
    if refused:
        log(f"note: this network does not run in {layout_name(DEPLOYMENT_LAYOUT)} ({refused}); it is "
            f"emitted, timed and saved {layout_name(deployed)}")
        slim = build_module(final_bg, "slim", "logits", memory_format=deployed).eval()
    slim_accuracy = p.accuracy(slim)
    if not d.is_main:
        return {}
    with torch.no_grad():
        slim_error = float((slim(probe) - pruned_student(probe)[0]).abs().max())
    for module in (original_module, slim):  # both timed as they are best run: in the deployment layout
        module.to(p.device, memory_format=deployed)
    latency = {f"batch{b}": median_latency({"original": original_module, "tailored": slim}, source.input_shape, b,
                                           device=p.device, memory_format=deployed) for b in (1, 32)}
    for module in (slim, bg.gm):  # saved on the CPU in its layout: torch.load(...)(images) runs as measured
        module.to("cpu", memory_format=deployed)
    slower = not_faster(latency)
    short = short_retraining(within, len(p.train_loader) * cfg.retrain_epochs, cfg.retrain_epochs)
    for warning in filter(None, (slower, short)):
        warnings.append(warning)
        log(f"warning: {warning}")

    arch = architecture_dict(p.trained_bg, final_bg, name=f"{source.name} → {data.name}")
    setattr(slim, ARCHITECTURE_ATTR, json.dumps(arch, sort_keys=True))
    atomic_write_json(run.path / "architecture.json", arch)
    try:
        render(to_dot(arch), run.path / "architecture.svg")
    except UserError as exc:  # Graphviz missing or failing: keep the run, leave the DOT text
        render(to_dot(arch), run.path / "architecture.dot")
        log(f"note: {exc}")
    atomic_torch_save(slim, run.path / "tailored.pt")
    report = {
        "backbone": source.name, "weights": source.weights, "dataset": data.name, "num_classes": data.num_classes,
        "train_images": len(data.train), "test_images": len(data.test),
        "classes": list(data.classes), "input_shape": list(source.input_shape),
        "feature_extraction_accuracy": feature_accuracy,
        "teacher_accuracy": p.teacher_accuracy, "student_accuracy": student.accuracy,
        "tailored_accuracy": slim_accuracy, "chosen_k": chosen.k, "chosen_theta": chosen.theta,
        "within_tolerance": within, "selection": reason,
        "tolerance": cfg.tolerance, "warnings": warnings, "cost": cfg.cost,
        **({"tailored_cost_share": chosen.cost} if chosen.cost is not None else {}),
        "original_macs": bg.total_macs, "tailored_macs": final_bg.macs(),
        "original_params": bg.total_params, "tailored_params": final_bg.params(),
        "task_specific_params": final_bg.task_params(),
        "universal_blocks_total": len(bg.universal()), "universal_blocks_kept": len(final_bg.universal()),
        "removed_blocks": removed_blocks(p.trained_bg, final_bg),
        "sweep": [t.as_dict() for t, _, _ in sorted(p.trials.values(), key=lambda v: (v[0].k, v[0].theta))],
        "student": student.as_dict(),
        "universal_sha256": digest_before,
        "universal_unchanged": digest_before == tensor_digest(bg.gm, skip=(classifier + ".",)),
        "slim_vs_pruned_student_max_abs_diff": slim_error,
        "latency_seconds": latency, "latency_on": latency_setting(p.device),
        "memory_format": layout_name(deployed),
        "stage_seconds": p.timings, "config": cfg.comparable(),
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
    atomic_write_json(run.path / "report.json", report)
    report["run_dir"] = str(run.path)
    return report

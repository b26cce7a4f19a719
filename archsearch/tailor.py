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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.fx as fx
from torch.utils.data import DataLoader

from archsearch.data import load_task_data
from archsearch.errors import UserError
from archsearch.graph.blockgraph import BlockGraph
from archsearch.graph.classifier import replace_classifier
from archsearch.graph.serialize import ARCHITECTURE_ATTR, architecture_dict
from archsearch.graph.trace import trace
from archsearch.io.atomic import atomic_torch_save, atomic_write_json
from archsearch.io.pack import tensor_digest, write_pack, write_universal
from archsearch.latency import interleaved_latency
from archsearch.models import resolve_model
from archsearch.passes.codegen import alphas, build_module, read_gates
from archsearch.passes.insert_proxies import insert_proxies, parse_skips
from archsearch.passes.prune import prune, removed_blocks
from archsearch.render import render, to_dot
from archsearch.select import Trial, bisect_k, choose
from archsearch.train.loop import evaluate, run_stage
from archsearch.train.stages import student_stage, task_prefixes, teacher_stage

# Options that may differ between a run and its --resume; every other option must match.
RESUMABLE_FIELDS = ("out", "resume", "progress", "device", "num_workers")


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
    gamma1: float = 0.3
    gamma2: float = 10.0
    theta: float = 0.05
    tolerance: float = 0.5
    sweep: str = "auto"
    max_retrains: int = 5
    teacher_epochs: int = 3
    student_epochs: int = 4
    retrain_epochs: int = 2
    batch_size: int = 64
    lr: float = 0.01
    student_lr: float = 0.05
    gate_lr: float = 0.05
    test_fraction: float = 0.2
    train_limit: int | None = None
    seed: int = 0
    device: str = "cpu"
    num_workers: int = 0
    resume: bool = False
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        """Reject impossible options early, each with one clear line."""
        parse_skips(self.skips)
        if self.tolerance < 0:
            raise UserError(f"--tolerance must be 0 or more accuracy points, not {self.tolerance}")
        if not 0 <= self.theta < 1:
            raise UserError(f"--theta must be in [0, 1), not {self.theta}")
        if self.train_limit is not None and self.train_limit < 1:
            raise UserError(f"--train-limit must be at least 1, not {self.train_limit}")
        if min(self.teacher_epochs, self.student_epochs, self.retrain_epochs) < 0:
            raise UserError("epoch counts must be 0 or more")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, not {self.batch_size}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
        if self.sweep != "auto":
            parse_sweep(self.sweep)

    def comparable(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RESUMABLE_FIELDS}


def parse_sweep(text: str) -> list[int]:
    """``"0,2,4"`` → [0, 2, 4]."""
    try:
        ks = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise UserError(f"--sweep must be 'auto' or a list of block counts like 0,2,4, not '{text}'") from None
    if not ks or ks[0] < 0:
        raise UserError(f"--sweep values must be 0 or more, not '{text}'")
    return ks


class RunDir:
    """A run directory: config, checkpoints, outputs; refuses to resume another configuration."""

    def __init__(self, cfg: TailorConfig) -> None:
        root = Path(cfg.out) if cfg.out else _default_out(cfg.resume)
        self.path = root
        try:
            (root / "checkpoints").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the output directory '{root}': {exc.strerror}; choose another --out") from exc
        config = root / "config.json"
        if config.exists() and cfg.resume:
            saved = json.loads(config.read_text())
            diff = [k for k, v in cfg.comparable().items() if json.loads(json.dumps(v)) != saved.get(k)]
            if diff:
                raise UserError(f"--resume: '{root}' was made with other options ({', '.join(diff[:4])} differ); "
                                "resume with the same options or choose a new --out")
        elif config.exists() and any((root / "checkpoints").iterdir()):
            raise UserError(f"'{root}' already holds a run; pass --resume to continue it or choose a new --out")
        try:
            atomic_write_json(config, cfg.comparable())
        except OSError as exc:
            raise UserError(f"the output directory '{root}' is not writable ({exc.strerror}); choose another --out") from exc

    def ckpt(self, name: str) -> Path:
        return self.path / "checkpoints" / f"{name}.pt"


def _default_out(resume: bool) -> Path:
    runs = Path("runs")
    if resume:
        previous = sorted(p for p in runs.glob("*") if (p / "config.json").exists()) if runs.exists() else []
        if not previous:
            raise UserError("--resume without --out needs an earlier run under ./runs; pass --out DIR")
        return previous[-1]
    return runs / time.strftime("%Y%m%d-%H%M%S")


def _loaders(cfg: TailorConfig, data) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(cfg.seed)
    train = DataLoader(data.train, batch_size=cfg.batch_size, shuffle=True, generator=g, drop_last=len(data.train) > cfg.batch_size,
                       num_workers=cfg.num_workers)
    test = DataLoader(data.test, batch_size=max(cfg.batch_size, 256), num_workers=cfg.num_workers)
    return train, test


def _logits(module: fx.GraphModule) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: module(x)[0]


def task_specific_params(bg: BlockGraph) -> int:
    """Parameters a task adds to the shared blocks: its proxies, its classifier and its gates."""
    head = bg.edge(bg.in_edges("logits")[0])["params"]
    gates = sum(len(bg.in_edges(n)) for n in bg.block_nodes() if len(bg.in_edges(n)) > 1)
    return head + gates + sum(bg.edge(e)["params"] for e in bg.proxies())


def tailor(cfg: TailorConfig, log: Callable[[str], None] = print) -> dict:
    """Run the whole NetTailor pipeline; returns the report (also written to report.json)."""
    cfg.check()
    torch.manual_seed(cfg.seed)
    source = resolve_model(cfg.backbone, cfg.model, cfg.weights, cfg.input_size)
    data = load_task_data(cfg.data, input_size=source.input_shape, mean=source.mean, std=source.std,
                          seed=cfg.seed, test_fraction=cfg.test_fraction, train_limit=cfg.train_limit)
    bg = replace_classifier(trace(source.model, source.input_shape, cfg.leaf_modules), data.num_classes)
    run = RunDir(cfg)
    log(f"run directory: {run.path}")
    log(f"data: {data.name}: {len(data.train)} train / {len(data.test)} test images, {data.num_classes} classes")
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    device = cfg.device

    classifier = bg.g.graph["classifier"]
    digest_before = tensor_digest(bg.gm, skip=(classifier + ".",))
    train_loader, test_loader = _loaders(cfg, data)
    bg.gm.to(device)

    teacher_bg = BlockGraph(bg.g.copy(), copy.deepcopy(bg.gm))
    teacher = build_module(teacher_bg, "student", "all")
    run_stage(teacher_stage(teacher, cfg.teacher_epochs, cfg.lr, run.ckpt("teacher")), train_loader, device,
              resume=True, progress=cfg.progress, seed=cfg.seed)
    teacher.eval()
    teacher_accuracy = evaluate(_logits(teacher), test_loader, device)
    timings["teacher"] = time.perf_counter() - clock
    log(f"teacher (fine-tuned {source.name}): {teacher_accuracy:.2f} %")

    bg.gm.get_submodule(classifier).load_state_dict(teacher.get_submodule(classifier).state_dict())
    student_bg = insert_proxies(bg, cfg.skips)
    student = build_module(student_bg, "student", "all").to(device)
    clock = time.perf_counter()
    run_stage(student_stage("student", student, student_bg, teacher, epochs=cfg.student_epochs, lr=cfg.student_lr,
                            gate_lr=cfg.gate_lr, gamma1=cfg.gamma1, gamma2=cfg.gamma2, checkpoint=run.ckpt("student")),
              train_loader, device, resume=True, progress=cfg.progress, seed=cfg.seed)
    student.eval()
    trained_bg = read_gates(student_bg, student.state_dict())
    trained_state = {k: v.clone() for k, v in student.state_dict().items() if k.startswith(task_prefixes(bg))}
    student_trial = Trial(-1, evaluate(_logits(student), test_loader, device), trained_bg.macs(), trained_bg.params(),
                          len(trained_bg.universal()))
    timings["student"] = time.perf_counter() - clock
    gate_values = alphas(trained_bg)
    log(f"student: {student_trial.accuracy:.2f} %; universal gates "
        + " ".join(f"{gate_values[e]:.2f}" for e in trained_bg.universal()))

    trials: dict[int, tuple[Trial, BlockGraph, dict]] = {}

    def try_k(k: int) -> bool:
        student.load_state_dict(trained_state, strict=False)
        pruned = prune(trained_bg, k, cfg.theta)
        retrained = build_module(pruned, "student", "all").to(device)
        run_stage(student_stage(f"retrain k={k}", retrained, pruned, teacher, epochs=cfg.retrain_epochs, lr=cfg.student_lr,
                                gate_lr=cfg.gate_lr, gamma1=0.0, gamma2=cfg.gamma2, checkpoint=run.ckpt(f"retrain-k{k}")),
                  train_loader, device, resume=True, progress=cfg.progress, seed=cfg.seed)
        retrained.eval()
        trial = Trial(k, evaluate(_logits(retrained), test_loader, device), pruned.macs(), pruned.params(),
                      len(pruned.universal()))
        state = {n: v.clone() for n, v in retrained.state_dict().items() if n.startswith(task_prefixes(bg))}
        trials[k] = (trial, read_gates(pruned, state), state)
        log(f"  k={k}: {trial.accuracy:.2f} % with {trial.blocks_kept}/{len(bg.universal())} blocks, "
            f"{trial.macs / 1e6:.2f} M MACs")
        return trial.accuracy >= teacher_accuracy - cfg.tolerance

    clock = time.perf_counter()
    if cfg.sweep == "auto":
        off = sum(1 for e in trained_bg.universal() if gate_values[e] < 0.5)
        bisect_k(max(off, 1), len(bg.universal()), try_k, cfg.max_retrains)
    else:
        for k in parse_sweep(cfg.sweep):
            try_k(min(k, len(bg.universal())))
    timings["sweep"] = time.perf_counter() - clock

    chosen, reason, within = choose([t for t, _, _ in trials.values()], student_trial, teacher_accuracy, cfg.tolerance)
    if chosen.k == -1:
        final_bg, state = prune(trained_bg, 0, theta=0.0), trained_state
    else:
        _, final_bg, state = trials[chosen.k]
    student.load_state_dict({k: v for k, v in state.items() if not k.startswith("gates.")}, strict=False)
    pruned_student = build_module(final_bg, "student", "all").eval()
    slim = build_module(final_bg, "slim", "logits").eval()
    slim_accuracy = evaluate(slim, test_loader, device)
    with torch.no_grad():
        probe = next(iter(test_loader))[0][:8].to(device)
        slim_error = float((slim(probe) - pruned_student(probe)[0]).abs().max())
    digest_after = tensor_digest(bg.gm, skip=(classifier + ".",))
    original_module = build_module(teacher_bg, "slim", "logits").eval()
    latency = {f"batch{b}": interleaved_latency({"original": original_module, "tailored": slim}, source.input_shape, b,
                                                device=device) for b in (1, 32)}

    arch = architecture_dict(trained_bg, final_bg, name=f"{source.name} → {data.name}")
    setattr(slim, ARCHITECTURE_ATTR, json.dumps(arch, sort_keys=True))
    atomic_write_json(run.path / "architecture.json", arch)
    try:
        render(to_dot(arch), run.path / "architecture.svg")
    except UserError as exc:  # no Graphviz here: keep the run, leave the DOT text
        render(to_dot(arch), run.path / "architecture.dot")
        log(f"note: {exc}")
    atomic_torch_save(slim, run.path / "tailored.pt")
    report = {
        "backbone": source.name, "weights": source.weights, "dataset": data.name, "num_classes": data.num_classes,
        "classes": list(data.classes), "input_shape": list(source.input_shape),
        "teacher_accuracy": teacher_accuracy, "student_accuracy": student_trial.accuracy,
        "tailored_accuracy": slim_accuracy, "chosen_k": chosen.k, "within_tolerance": within, "selection": reason,
        "tolerance": cfg.tolerance,
        "original_macs": bg.total_macs, "tailored_macs": final_bg.macs(),
        "original_params": bg.total_params, "tailored_params": final_bg.params(),
        "task_specific_params": task_specific_params(final_bg),
        "universal_blocks_total": len(bg.universal()), "universal_blocks_kept": len(final_bg.universal()),
        "removed_blocks": removed_blocks(trained_bg, final_bg),
        "sweep": [t.as_dict() for t, _, _ in sorted(trials.values(), key=lambda v: v[0].k)],
        "student": student_trial.as_dict(),
        "universal_sha256": digest_before, "universal_unchanged": digest_before == digest_after,
        "slim_vs_pruned_student_max_abs_diff": slim_error,
        "latency_seconds": latency, "stage_seconds": timings, "config": cfg.comparable(),
    }
    universal_sha256 = write_universal(bg.gm, classifier, run.path / "universal.pt")
    summary_keys = ("backbone", "dataset", "teacher_accuracy", "tailored_accuracy", "original_macs", "tailored_macs",
                    "original_params", "tailored_params", "task_specific_params")
    report["task_pack_bytes"] = write_pack(
        slim, bg.gm, classifier, universal_sha256, run.path / "task.pack",
        {"name": data.name, "classes": list(data.classes), "input_shape": list(source.input_shape),
         "mean": list(source.mean), "std": list(source.std), "report": {k: report[k] for k in summary_keys}})
    report["universal_bytes"] = (run.path / "universal.pt").stat().st_size
    atomic_write_json(run.path / "report.json", report)
    report["run_dir"] = str(run.path)
    return report

"""Report: what a run writes to ``report.json``, from the search's values and the export's artifacts.

``docs/usage.md`` lists every key. Accuracies are given on validation (what decided) and test (what
reports); ``selection_split`` and ``tolerance_judged_on`` name the split the choice read.
"""
from __future__ import annotations

from archsearch.errors import RunFailed
from archsearch.graph.blockgraph import BlockGraph
from archsearch.io.atomic import atomic_write_json
from archsearch.passes.prune import removed_blocks
from archsearch.pipeline.advice import not_faster
from archsearch.pipeline.artifacts import Artifacts
from archsearch.pipeline.config import TailorConfig
from archsearch.pipeline.rundir import RunDir
from archsearch.pipeline.search import Found, Search, Yardsticks
from archsearch.platform.latency import latency_setting
from archsearch.platform.memory_format import layout_name
from archsearch.sources.models import SourceModel

# What a task pack repeats of its run's report (``archsearch packs`` lists them).
PACK_SUMMARY_KEYS = ("backbone", "dataset", "teacher_accuracy", "tailored_accuracy", "original_macs",
                     "tailored_macs", "original_params", "tailored_params", "task_specific_params")


def run_facts(cfg: TailorConfig, source: SourceModel, data, yardsticks: Yardsticks, search: Search) -> dict:
    """The report's first part, known once the teacher is trained: the task, its splits, the
    preprocessing, and the feature-extraction and teacher scores."""
    fe, teacher = yardsticks.feature_extraction, yardsticks.scores
    return {
        "backbone": source.name, "weights": source.weights, "dataset": data.name, "num_classes": data.num_classes,
        "train_images": len(data.train), "val_images": len(data.val), "test_images": len(data.test),
        "classes": list(data.classes), "input_shape": list(source.input_shape),
        "mean": list(source.mean), "std": list(source.std), "augment": data.augment,
        "streaming": bool(getattr(data, "streaming", False)), "selection_split": "validation",
        "feature_extraction": fe.as_dict(), "teacher": {**teacher.as_dict(), "stage": search.stages["teacher"]},
        "feature_extraction_accuracy": fe.test, "teacher_accuracy": teacher.test,
        "config": cfg.comparable(),
    }


def failed_teacher(run: RunDir, facts: dict, yardsticks: Yardsticks) -> RunFailed:
    """Write the report of a run whose teacher did not beat feature extraction; the error to raise."""
    fe, teacher = yardsticks.feature_extraction, yardsticks.scores
    message = (f"the fine-tuned teacher ({teacher.val:.2f} % on validation) is no better than feature extraction "
               f"({fe.val:.2f} %): it cannot be the yardstick of the choice, so no network was chosen. Try another "
               "--lr (the pre-trained weights' rate), more data, or --augment; report.json has each stage's history")
    atomic_write_json(run.path / "report.json", {**facts, "status": "failed", "failure": message})
    return RunFailed(message)


def warnings_for(artifacts: Artifacts) -> list[str]:
    """What the figures alone would not tell a user (today: a tailored network that is not faster)."""
    return [w for w in (not_faster(artifacts.latency),) if w]


def final_report(cfg: TailorConfig, facts: dict, bg: BlockGraph, found: Found, artifacts: Artifacts,
                 search: Search, universal: dict, distributed: dict) -> dict:
    """The whole report of a finished run. ``universal`` holds ``universal_sha256`` (before the run)
    and ``universal_unchanged``; ``distributed`` the world size and whether every rank's gates agree."""
    chosen, student, final_bg, tailored = found.chosen, found.student, found.final_bg, artifacts.scores
    return {
        **facts,
        "student": {**student.as_dict(), "stage": search.stages["student"]},
        "tailored": tailored.as_dict(),
        "student_accuracy": student.test_accuracy, "tailored_accuracy": tailored.test,
        "chosen_k": chosen.k, "chosen_theta": chosen.theta,
        "within_tolerance": found.within, "tolerance_judged_on": "validation", "selection": found.reason,
        "tolerance": cfg.tolerance, "warnings": warnings_for(artifacts), "cost": cfg.cost, "status": "ok",
        **({"tailored_cost_share": chosen.cost} if chosen.cost is not None else {}),
        "original_macs": bg.total_macs, "tailored_macs": final_bg.macs(),
        "original_params": bg.total_params, "tailored_params": final_bg.params(),
        "task_specific_params": final_bg.task_params(),
        "universal_blocks_total": len(bg.universal()), "universal_blocks_kept": len(final_bg.universal()),
        "removed_blocks": removed_blocks(found.trained_bg, final_bg),
        "sweep": [r.trial.as_dict() | {"stage": search.stages.get(r.key)} for r in found.trials],
        **universal,
        "slim_vs_pruned_student_max_abs_diff": artifacts.slim_error,
        "latency_seconds": artifacts.latency, "latency_on": latency_setting(search.device),
        "memory_format": layout_name(artifacts.layout),
        "feature_rms": search.feature_rms,
        "stage_seconds": search.timings,
        "distributed": distributed,
    }

"""The NetTailor pipeline, as one function over a config object: search, then export, then report.

trace → BlockGraph → new classifier → **search** (feature extraction and teacher fine-tune, insert
proxies, student training, prune k → retrain for the ks of the sweep, pick the leanest within
tolerance; :mod:`archsearch.pipeline.search`) → **export** (slim module, its check and latency, the
run directory's files; :mod:`archsearch.pipeline.artifacts`) → **report** (``report.json``;
:mod:`archsearch.pipeline.report`).

Three splits: every decision (when a stage stops, k, theta, the pick, the tolerance check) reads
the validation split; the test split only reports networks already chosen.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from archsearch.data import describe, load_task_data
from archsearch.data.memory import peak_rss_bytes
from archsearch.data.raw import RawData
from archsearch.errors import RunFailed
from archsearch.graph.blockgraph import BlockGraph
from archsearch.graph.classifier import replace_classifier
from archsearch.graph.trace import trace
from archsearch.io.atomic import atomic_write_json
from archsearch.io.pack import tensor_digest
from archsearch.pipeline.artifacts import export_network, write_outputs
from archsearch.pipeline.config import TailorConfig, default_gamma1, parse_floats
from archsearch.pipeline.report import PACK_SUMMARY_KEYS, failed_teacher, final_report, run_facts
from archsearch.pipeline.rundir import run_dir
from archsearch.pipeline.search import Search
from archsearch.sources.models import SourceModel, resolve_model
from archsearch.sources.zoo import is_zoo_spec
from archsearch.train import distributed
from archsearch.train.distributed import Dist


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


def _tailor(cfg: TailorConfig, source: SourceModel, data, bg: BlockGraph, d: Dist, log: Callable[[str], None]) -> dict:
    classifier = bg.g.graph["classifier"]
    digest_before = tensor_digest(bg.gm, skip=(classifier + ".",))
    inputs = {"universal_sha256": digest_before, "data_sha256": data.digest()} if d.is_main else {}  # rank 0 checks
    run = run_dir(cfg, d, inputs)
    log(f"run directory: {run.path}" + (f" ({d.world_size} processes)" if d.enabled else ""))
    if cfg.model and not cfg.weights and not is_zoo_spec(cfg.model):  # the zoo says where its weights came from
        log(f"note: --model without --weights: the blocks keep the weights {cfg.model} gave them; "
            "if it builds an untrained network, pass its pre-trained state dict with --weights")
    log(f"data: {describe(data)}; training augmentation: {data.augment}")
    log(f"gamma1: {cfg.gamma1:g} for {len(bg.universal())} universal blocks "
        f"(default: a third of the blocks, {default_gamma1(len(bg.universal())):g})")

    search = Search(cfg, run, bg, data, d, log)
    yardsticks = search.yardsticks(data, source.name)
    facts = run_facts(cfg, source, data, yardsticks, search)
    if not yardsticks.teacher_is_better:
        if d.is_main:
            raise failed_teacher(run, facts, yardsticks)
        raise RunFailed("the teacher is no better than feature extraction")
    found = search.find(yardsticks)
    gates = distributed.all_gather(d, [a["logit"] for _, a in found.trained_bg.iter_attrs(("universal", "proxy"))])

    artifacts = export_network(search, source, yardsticks.teacher_bg, found.final_bg, bg, d.is_main)
    if not d.is_main:
        return {}
    universal = {"universal_sha256": digest_before,
                 "universal_unchanged": digest_before == tensor_digest(bg.gm, skip=(classifier + ".",))}
    report = final_report(cfg, facts, bg, found, artifacts, search, universal,
                          {"world_size": d.world_size, "gates_identical_across_ranks": all(g == gates[0] for g in gates)})
    for warning in report["warnings"]:
        log(f"warning: {warning}")
    pack_meta = {"name": data.name, "classes": list(data.classes), "input_shape": list(source.input_shape),
                 "mean": list(source.mean), "std": list(source.std), "memory_format": report["memory_format"],
                 "report": {k: report[k] for k in PACK_SUMMARY_KEYS}}
    report.update(write_outputs(run, artifacts, found, bg, f"{source.name} → {data.name}", pack_meta, log))
    report["peak_rss_bytes"] = peak_rss_bytes()
    atomic_write_json(run.path / "report.json", report)
    report["run_dir"] = str(run.path)
    return report

"""archsearch as a Python library: tailor a network object on data objects in one call, or run the
method's steps one by one as passes over a BlockGraph, in the style of torch.fx.

    import archsearch, torchvision
    result = archsearch.tailor(torchvision.models.resnet50(), "flowers/", example_input=torch.zeros(1, 3, 224, 224),
                               weights="resnet50.pth")
    result.module(images)          # the slim torch.fx.GraphModule
    result.report["tailored_macs"] # what report.json holds
    result.save("runs/flowers"); result.render("flowers.svg")

    bg = archsearch.trace(model, example_input)        # the block graph: blocks, shapes, MACs
    student = archsearch.insert_proxies(bg, skips=3)   # proxies and gates for every block
    archsearch.expected_complexity(student)            # E[C] at the gates' values, differentiable
    slim = archsearch.build(archsearch.prune(student, k=4, theta=0.05))

The command line (``archsearch tailor``, ``inspect``) calls these same functions.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.fx as fx
import torch.nn as nn

import backbones
from archsearch.train.complexity import expected_complexity as _expected_complexity
from archsearch.pipeline.config import TailorConfig
from archsearch.data.raw import RawData
from archsearch.errors import UserError
from archsearch.graph.blockgraph import BlockGraph, Edge
from archsearch.graph.gates import alphas
from archsearch.graph.trace import feature_map_problem
from archsearch.graph.trace import trace as _trace
from archsearch.io.jsonfile import read_json_dict
from archsearch.sources.models import IMAGENET_MEAN, IMAGENET_STD, SourceModel, resolve_model
from archsearch.passes.codegen import build_slim, build_student
from archsearch.passes.insert_proxies import insert_proxies as _insert_proxies
from archsearch.passes.prune import prune as _prune

__all__ = ["Tailored", "build", "expected_complexity", "insert_proxies", "prune", "run_config", "source_model", "tailor",
           "trace"]

# What a run directory holds for a user (checkpoints stay behind); .save() copies these.
ARTIFACTS = ("report.json", "tailored.pt", "task.pack", "universal.pt", "architecture.json", "architecture.svg",
             "architecture.dot", "config.json")
_GIVEN = ("backbone", "model", "weights", "data", "input_size", "out")  # the API's own arguments, not options


@dataclass
class Tailored:
    """A finished tailoring: the slim network, its report and the run directory it was written to."""

    module: fx.GraphModule
    report: dict
    run_dir: Path

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of the slim network (normalised images, as ``report["mean"]``/``["std"]`` say)."""
        return self.module(images)

    def save(self, directory: str | Path) -> Path:
        """Copy the run's results (report.json, tailored.pt, task.pack, universal.pt, the architecture)
        into ``directory``; returns it."""
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        for name in ARTIFACTS:
            if (self.run_dir / name).is_file() and (self.run_dir / name).resolve() != (target / name).resolve():
                shutil.copy2(self.run_dir / name, target / name)
        return target

    def render(self, path: str | Path, **options: Any) -> Path:
        """Draw the tailored architecture (Fig. 4 of the paper) to ``path`` (.svg, .png, .pdf or .dot);
        ``options`` as :func:`archsearch.render.draw.to_dot` (``show_removed=True``, ``row_blocks=…``)."""
        from archsearch.render.draw import load_architecture, render, to_dot

        return render(to_dot(load_architecture(self.run_dir), **options), path)


def input_shape(example_input: torch.Tensor | Sequence[int]) -> tuple[int, int, int]:
    """(C, H, W) of an example batch (N, C, H, W), an example image (C, H, W), or such a shape."""
    shape = tuple(example_input.shape) if isinstance(example_input, torch.Tensor) else tuple(example_input)
    if len(shape) == 4:
        shape = shape[1:]
    if len(shape) != 3 or not all(isinstance(v, int) and v > 0 for v in shape):
        raise UserError(f"example_input has shape {shape}; give a batch (N, C, H, W), an image (C, H, W) or such a shape")
    return shape  # type: ignore[return-value]


def source_model(model: nn.Module | str, example_input: torch.Tensor | Sequence[int] | None = None, *,
                 weights: str | Path | None = None, require_weights: bool = False,
                 trust_pickle: bool = False) -> SourceModel:
    """The network to tailor with its input description: an ``nn.Module`` (``example_input`` required;
    ImageNet's mean and std unless the options give others) or a name: a built-in backbone
    (``"resnet50"``), ``"torchvision:NAME"``, ``"timm:NAME"`` or ``"FILE.py:FACTORY"``. ``weights``
    (a state dict file) is loaded into it, the classifier excepted where its classes differ;
    ``require_weights=True`` refuses a built-in backbone without them (``"resnet20"`` then takes its
    built-in Fashion-MNIST weights), as ``archsearch tailor`` does."""
    size = ",".join(map(str, input_shape(example_input))) if example_input is not None else None
    file = str(weights) if weights is not None else None
    if isinstance(model, str):
        spec, backbone = (model, None) if ":" in model else (None, model)
        return resolve_model(backbone, spec, file, size, require_weights=require_weights, trust_pickle=trust_pickle)
    if not isinstance(model, nn.Module):
        raise UserError(f"model is a {type(model).__name__}; give a torch.nn.Module or a model name")
    if size is None:
        raise UserError("give example_input (a batch like torch.zeros(1, 3, 224, 224), or its shape) for an "
                        "nn.Module: archsearch traces the model on it")
    if file is not None:
        backbones.load_weights(model, file, ignore_classifier=True, trust_pickle=trust_pickle)
    return SourceModel(model, type(model).__name__.lower(), input_shape(example_input), IMAGENET_MEAN, IMAGENET_STD, file)


def _options(options: dict) -> dict:
    """Keyword options as TailorConfig fields: sequences of mean/std as text, every name checked."""
    fields = {f.name for f in dataclasses.fields(TailorConfig)} - set(_GIVEN)
    unknown = sorted(set(options) - fields)
    if unknown:
        raise UserError(f"tailor() has no option {unknown[0]!r}; options are {', '.join(sorted(fields))}")
    out = dict(options)
    for key in ("mean", "std", "sweep", "theta_sweep"):
        if isinstance(out.get(key), (list, tuple)):
            out[key] = ",".join(str(v) for v in out[key])
    for key in ("skips", "max_memory"):
        if key in out and out[key] is not None:
            out[key] = str(out[key])
    if "leaf_modules" in out:
        out["leaf_modules"] = tuple(out["leaf_modules"])
    return out


def tailor(model: nn.Module | str, train: Any, test: Any = None, *,
           example_input: torch.Tensor | Sequence[int] | None = None, weights: str | Path | None = None,
           classes: Sequence[str] | None = None, out: str | Path | None = None,
           log: Callable[[str], None] | None = print, **options: Any) -> Tailored:
    """Tailor ``model`` to the task of ``train`` (and ``test``, its own test split; without it a seeded
    share of ``train`` is held out): the whole NetTailor method, as ``archsearch tailor`` runs it.

    ``model``: an ``nn.Module`` with ``example_input``, or a name (see :func:`source_model`).
    ``train``/``test``: a Dataset or DataLoader of (image, label), ``(images, labels)`` tensors or
    arrays, or a path or built-in name (``"digits"``); images as stored, not normalised
    (:mod:`archsearch.data.objects`). ``options``: those of ``archsearch tailor`` with underscores
    (``teacher_epochs=1``, ``sweep="0,2"``, ``skips=3``, ``mean=(0.5,)``, ``leaf_modules=["DropPath"]``, …).
    ``out``: the run directory (default: a new temporary one; ``Tailored.save`` copies the results).

    Example::

        result = archsearch.tailor(model, "digits", example_input=torch.zeros(1, 3, 32, 32), teacher_epochs=1)
        result.report["tailored_macs"] / result.report["original_macs"]

    Raises :class:`~archsearch.errors.UserError` (one line) for anything wrong with the inputs and
    :class:`~archsearch.errors.RunFailed` when the fine-tuned teacher is no better than feature extraction.
    """
    from archsearch.data.objects import raw_data

    opts = _options(options)
    source = source_model(model, example_input, weights=weights, require_weights=True,
                          trust_pickle=bool(opts.get("trust_pickle")))
    data = raw_data(train, test, classes)
    shape = ",".join(map(str, source.input_shape))
    cfg = TailorConfig(out=str(out) if out is not None else tempfile.mkdtemp(prefix="archsearch-"),
                       data=data if isinstance(data, str) else data.source, input_size=shape, weights=source.weights,
                       **opts)
    report = run_config(cfg, log, source=source, raw=None if isinstance(data, str) else data)
    run = Path(report.get("run_dir", cfg.out))
    module = torch.load(run / "tailored.pt", weights_only=False)  # written by this very run
    return Tailored(module, read_json_dict(run / "report.json", "the run just wrote it"), run)


def run_config(cfg: TailorConfig, log: Callable[[str], None] | None = print, *, source: SourceModel | None = None,
               raw: RawData | None = None) -> dict:
    """Run the pipeline on a :class:`TailorConfig` (what ``archsearch tailor`` does), refusing a network
    without convolutional feature maps before any training; returns the report (empty on ranks other
    than 0 under torchrun). ``source``/``raw`` replace the config's network and data."""
    from archsearch.pipeline.run import tailor as run_pipeline

    if source is None:
        cfg.check()
        torch.manual_seed(cfg.seed)  # a network built with random weights is the same one on --resume
        source = resolve_model(cfg.backbone, cfg.model, cfg.weights, cfg.input_size, trust_pickle=cfg.trust_pickle)
    problem = feature_map_problem(_trace(source.model, source.input_shape, cfg.leaf_modules))
    if problem:  # proxies would refuse it only after the teacher is fine-tuned
        raise UserError(problem)
    return run_pipeline(cfg, log or (lambda _m: None), source=source, raw=raw)


def trace(model: nn.Module | str, example_input: torch.Tensor | Sequence[int] | None = None, *,
          leaf_modules: Sequence[str | type] = ()) -> BlockGraph:
    """The model's BlockGraph: traced by torch.fx (in evaluation mode, checked against training mode),
    cut into stem, universal blocks and head, with every block's shapes, MACs and parameters.

        bg = archsearch.trace(torchvision.models.resnet50(), torch.zeros(1, 3, 224, 224))
        len(bg.universal()), bg.total_macs, bg.total_params   # 16 blocks, 4.09 G MACs, 25,557,032

    ``model`` may also be a name (see :func:`source_model`), whose own input size is the default.
    Raises :class:`UserError` for a model archsearch cannot tailor (no residual block, no
    convolutional feature maps, a graph that depends on the mode), naming why."""
    source = source_model(model, example_input)
    bg = _trace(source.model, source.input_shape, leaf_modules)
    problem = feature_map_problem(bg)
    if problem:
        raise UserError(problem)
    return bg


def insert_proxies(bg: BlockGraph, skips: int | str = 3) -> BlockGraph:
    """A student BlockGraph: every universal block gets proxies from the ``skips`` nearest earlier nodes
    (``"dense"``: all of them) and a gate over its inputs (the blocks themselves are shared, not copied)."""
    return _insert_proxies(bg, skips)


def expected_complexity(bg: BlockGraph, alpha: dict[Edge, torch.Tensor] | None = None) -> torch.Tensor:
    """E[C], the expected share of the network's MACs the gates keep (paper eq. 5-10), differentiable in
    ``alpha`` (one gate value per universal and proxy edge; default: the gates' current values)."""
    return _expected_complexity(bg, alphas(bg) if alpha is None else alpha)


def prune(bg: BlockGraph, k: int, theta: float = 0.05) -> BlockGraph:
    """The student pruned: proxies gated under ``theta`` and the ``k`` lowest-gated blocks removed, and
    whatever they alone fed (paper section 3.5)."""
    return _prune(bg, k, theta)


def build(bg: BlockGraph, mode: str = "slim", memory_format: torch.memory_format = torch.contiguous_format
          ) -> fx.GraphModule:
    """The network a BlockGraph describes as one ``torch.fx.GraphModule`` returning logits: ``"slim"``
    (gates folded in, proxies in inference form, universal blocks the very same modules) or
    ``"student"`` (trainable proxies and gate logits)."""
    if mode not in ("slim", "student"):
        raise UserError(f"build mode must be 'slim' or 'student', not {mode!r}")
    if mode == "student":
        return build_student(bg, block_outputs=False)
    return build_slim(bg, memory_format=memory_format)

"""archsearch's command line: parses options, calls the library, prints. Nothing else lives here."""
from __future__ import annotations

import functools
import json
from typing import Callable

import click

from archsearch.platform.allocator import keep_freed_memory
from archsearch.errors import RunFailed, UserError


def user_errors(fn: Callable) -> Callable:
    """Turn a UserError into one line on stderr and exit status 2 (a traceback only with --debug)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        try:
            return fn(*args, **kwargs)
        except (UserError, RunFailed) as exc:
            if ctx.find_root().params.get("debug"):
                raise
            click.echo(f"archsearch: {'failed' if isinstance(exc, RunFailed) else 'error'}: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            hint = "; run the same command with --resume to continue" if "resume" in ctx.params else ""
            click.echo(f"archsearch: interrupted{hint}", err=True)
            ctx.exit(130)
    return wrapper


_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


class _OneLineUsageError(click.UsageError):
    """Click's usage errors (a bad option value, an unknown command) as one line, like every other error."""

    def show(self, file=None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(f"archsearch: error: {self.format_message()}{hint}", err=True)


def _one_line(call: Callable, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except click.UsageError as exc:
        if isinstance(exc, (_OneLineUsageError, _NO_ARGS_IS_HELP)):  # bare `archsearch` prints its help
            raise
        raise _OneLineUsageError(exc.format_message(), exc.ctx) from exc


class _Command(click.Command):
    def make_context(self, *args, **kwargs) -> click.Context:
        return _one_line(super().make_context, *args, **kwargs)


class _Group(click.Group):
    command_class = _Command

    def make_context(self, *args, **kwargs) -> click.Context:
        return _one_line(super().make_context, *args, **kwargs)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        return _one_line(super().resolve_command, ctx, args)


TRUST_HELP = ("Read files that need full unpickling, which can run code: a --weights file holding Python objects "
              "other than tensors, a universal.pt or task pack in a pickled format. Only for files you trust.")


def trust_option(fn: Callable) -> Callable:
    """--trust-pickle: accept a file that only full unpickling reads (refused by default)."""
    return click.option("--trust-pickle", is_flag=True, help=TRUST_HELP)(fn)


def model_options(fn: Callable) -> Callable:
    """--backbone / --model / --weights / --input-size / --leaf, shared by every command."""
    fn = click.option("--leaf", "leaf_modules", multiple=True, metavar="NAME",
                      help="Module class or path fx must not trace into (repeatable).")(fn)
    fn = click.option("--input-size", metavar="C,H,W", help="Input shape (default: the backbone's own).")(fn)
    fn = click.option("--weights", metavar="FILE",
                      help="Pre-trained state dict (.pt/.pth, or .safetensors for timm); torchvision layout for "
                           "--backbone resnet18/34/50. For a zoo --model, its classifier takes the file's classes; "
                           "without it, the library's own cached checkpoint where there is one (nothing is "
                           "downloaded).")(fn)
    fn = click.option("--model", "model_spec", metavar="SPEC",
                      help="The network: FILE.py:FACTORY (your Python file and a function returning an nn.Module), "
                           "torchvision:NAME (e.g. torchvision:resnet50; pip install archsearch[torchvision]) or "
                           "timm:NAME (e.g. timm:resnet50d; pip install archsearch[timm]); input size and "
                           "normalisation from the library's metadata.")(fn)
    fn = click.option("--backbone", metavar="NAME", help="A built-in backbone (see `archsearch backbones`).")(fn)
    return fn


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.version_option(package_name="archsearch")
def main(debug: bool) -> None:
    """Tailor a pre-trained residual network to a new task by changing its architecture (NetTailor).

    \b
    archsearch tailor                  the built-in default: ResNet-20 (pre-trained on Fashion-MNIST) → MNIST
    archsearch inspect --backbone resnet50 --input-size 3,224,224
    archsearch render runs/<run> -o arch.svg
    """
    keep_freed_memory()


@main.command()
@model_options
@click.option("--data", default="mnist-5k", show_default=True,
              help="fashion-mnist | mnist-5k | digits | an ImageFolder, IDX folder or .npz path.")
@click.option("--out", metavar="DIR", help="Run directory (default: runs/<timestamp>).")
@click.option("--skips", default="3", show_default=True, help="Proxies per block: a number or 'dense'.")
@click.option("--gamma1", type=float,
              help="Weight of the expected complexity E[C]  [default: a third of the number of universal "
                   "blocks, 3 for ResNet-20, 9 for ResNet-56, since E[C]'s pull on one block shrinks with depth; "
                   "docs/design-choices.md]")
@click.option("--gamma2", default=10.0, show_default=True, help="Weight of the teacher term Omega in the student.")
@click.option("--retrain-gamma2", default=1.0, show_default=True,
              help="Weight of Omega when a pruned network is retrained (the network is fixed then: Omega only "
                   "regularises, and at 10 it held accuracy back; docs/design-choices.md).")
@click.option("--theta", default=0.05, show_default=True, help="Proxies with a gate under this are pruned.")
@click.option("--theta-sweep", default="auto", show_default=True,
              help="Then, at the chosen k, retrain with larger proxy thresholds in turn while the network stays "
                   "within tolerance, and keep the leanest: 'auto' (0.15, 0.25: those above --theta), 'none', or "
                   "a list like 0.1,0.2. Proxies cost more time per MAC than blocks.")
@click.option("--cost", type=click.Choice(["macs", "latency"]), default="macs", show_default=True,
              help="What the complexity term and 'leanest' count: 'macs' (the paper's), or 'latency': each block "
                   "and proxy timed once on this device at the training batch (kept in the run's costs.json), "
                   "so the search weighs blocks by their time here (on CPU a MAC at full resolution costs "
                   "about 1.8x one at the lowest). Task-dependent: faster on ResNet-56 -> notMNIST, slower on "
                   "MNIST (docs/design-choices.md).")
@click.option("--tolerance", default=0.5, show_default=True, help="Accuracy points the tailored net may lose against the teacher (if no network "
                   "gets that close: against the most accurate one tried).")
@click.option("--sweep", default="auto", show_default=True,
              help="k, the number of lowest-gated blocks to remove: 'auto' (bisection) or a list like 0,2,4. "
                   "A block that only proxies under --theta read goes too (output exclusion).")
@click.option("--max-retrains", default=5, show_default=True, help="Most retrainings the auto sweep may run.")
@click.option("--teacher-epochs", type=int,
              help="Fixed epochs of teacher fine-tuning  [default: until validation accuracy stops improving: "
                   "at least 500 steps, at most 40 epochs]")
@click.option("--student-epochs", type=int,
              help="Fixed epochs of student training  [default: until its validation objective stops improving: "
                   "at least 500 steps, at most 20 epochs]")
@click.option("--retrain-epochs", type=int,
              help="Fixed epochs of each retraining after pruning  [default: until validation accuracy stops "
                   "improving: at least 250 steps, at most 30 epochs]")
@click.option("--batch-size", default=64, show_default=True,
              help="Images per training step (the total, under torchrun).")
@click.option("--lr", default=0.01, show_default=True,
              help="Learning rate of the teacher's pre-trained weights (its new classifier, which starts from "
                   "feature extraction's, learns 10x faster, scaled down where the features are large).")
@click.option("--student-lr", default=0.05, show_default=True, help="Learning rate of proxies and classifier (student and retraining).")
@click.option("--gate-lr", default=0.05, show_default=True,
              help="Learning rate of the gate logits (larger values saturate the softmax before proxies learn).")
@click.option("--test-fraction", default=0.2, show_default=True, help="Test share for data without a test split.")
@click.option("--val-fraction", default=0.1, show_default=True,
              help="Validation share carved from the training images (stratified, at least 2 per class): every "
                   "choice (stopping, k, theta, the pick, the tolerance) reads it; the test split only reports.")
@click.option("--augment", type=click.Choice(["auto", "none", "light", "standard"]), default="auto", show_default=True,
              help="Training augmentation: light = padded random crop; standard = random-resized crop and "
                   "horizontal flip (natural images). auto = light, for the built-in data and for your folders "
                   "and files alike (no flips: safe for digits and text); ask for standard for photos.")
@click.option("--mean", metavar="M[,M,M]",
              help="Per-channel mean of the input normalisation (pixels in 0..1)  [default: the backbone's own; "
                   "ImageNet's 0.485,0.456,0.406 for --model]")
@click.option("--std", metavar="S[,S,S]",
              help="Per-channel std of the input normalisation  [default: the backbone's own; ImageNet's "
                   "0.229,0.224,0.225 for --model]")
@click.option("--max-memory", metavar="SIZE",
              help="Memory for preprocessed images, like 2G: an image folder larger than this streams from disk "
                   "with worker processes  [default: $ARCHSEARCH_MAX_MEMORY, else half the available memory]")
@click.option("--train-limit", type=int, help="Use at most this many training images (quick runs).")
@click.option("--seed", default=0, show_default=True, help="Seed of the data split, subsets, shuffling and new layers.")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
@click.option("--amp", is_flag=True, help="Mixed precision (bfloat16 autocast) for training.")
@click.option("--fp32-targets", is_flag=True,
              help="Compute the frozen teacher's targets for Omega in float32 (default: bfloat16 where the "
                   "device has it natively, about 3x cheaper on such CPUs).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run (same --out and options).")
@trust_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
@user_errors
def tailor(model_spec, quiet, **opts) -> None:
    """Run the whole method: teacher, student with proxies and gates, pruning sweep, retraining.

    With no options it tailors the built-in ResNet-20 (pre-trained by archsearch on Fashion-MNIST)
    to the 5,000-image MNIST subset (about 30 minutes on one CPU core). Each stage trains until its
    validation score stops improving; a teacher no better than feature extraction fails the run
    (exit status 3, report.json written). Writes report.json, tailored.pt, task.pack, universal.pt and
    architecture.svg to the run directory (architecture.dot, with a note, where Graphviz cannot draw).

    \b
    Several processes: torchrun --nproc-per-node N -m archsearch tailor ...
    (DistributedDataParallel; gloo on CPU, NCCL with --device cuda; --batch-size is the total.)
    """
    from archsearch.api import run_config
    from archsearch.pipeline.config import TailorConfig
    from archsearch.pipeline.summary import summary

    opts["leaf_modules"] = tuple(opts["leaf_modules"])
    cfg = TailorConfig(model=model_spec, progress=not quiet, **opts)
    report = run_config(cfg, log=lambda m: click.echo(m, err=True))
    if report:  # under torchrun only rank 0 reports
        click.echo(summary(report))


@main.command()
@model_options
@click.option("--skips", help="Also show the candidate proxies for this many skips ('dense' for all).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@trust_option
@user_errors
def inspect(backbone, model_spec, weights, input_size, leaf_modules, skips, as_json, trust_pickle) -> None:
    """Print the block graph of a network: blocks, shapes, MACs and parameters."""
    from archsearch.tools.inspect import inspect_model, table
    from archsearch.sources.models import resolve_model

    source = resolve_model(backbone, model_spec, weights, input_size, require_weights=False,
                           trust_pickle=trust_pickle)
    desc = inspect_model(source.model, source.input_shape, leaf_modules, skips)
    click.echo(json.dumps(desc, indent=2) if as_json else table(desc))


@main.command()
@click.option("--backbone", default="resnet20", show_default=True, help="A built-in backbone to train from scratch.")
@click.option("--data", default="fashion-mnist", show_default=True,
              help="fashion-mnist | mnist-5k | digits | an ImageFolder, IDX folder or .npz path.")
@click.option("--epochs", default=6, show_default=True, help="Training epochs (SGD, cosine learning rate).")
@click.option("--batch-size", default=128, show_default=True, help="Images per step.")
@click.option("--lr", default=0.1, show_default=True, help="Initial learning rate.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the data subset, shuffling and initial weights.")
@click.option("--train-limit", type=int, help="Train on at most this many images (a seeded subset).")
@click.option("-o", "--output", default=None, metavar="FILE",
              help="Where to save the weights  [default: ./BACKBONE-DATA.pt]")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
@click.option("--quiet", is_flag=True, help="No progress bars.")
@user_errors
def pretrain(backbone, data, epochs, batch_size, lr, seed, train_limit, output, device, quiet) -> None:
    """Train a backbone from scratch.

    The built-in default's weights came from this command, with the options in
    docs/pretrained-weights.md (5 epochs on 20,000 Fashion-MNIST images).
    """
    from archsearch.tools.pretrain import pretrain as run_pretrain

    result = run_pretrain(backbone, data, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                          train_limit=train_limit, output=output, device=device, progress=not quiet)
    click.echo(json.dumps(result, indent=2))


@main.command()
@click.option("--universal", required=True, metavar="FILE", help="universal.pt written by a tailoring run.")
@click.option("--task", "packs", multiple=True, required=True, metavar="PACK", help="A task.pack (repeatable).")
@click.option("--top", default=3, show_default=True, type=click.IntRange(min=1), help="How many classes to print.")
@click.argument("images", nargs=-1, required=True)
@trust_option
@user_errors
def predict(universal, packs, top, images, trust_pickle) -> None:
    """Classify images with several tailored tasks that share one set of universal blocks.

    IMAGES are image files or folders of them (searched recursively).
    """
    from archsearch.runtime.packs import image_files, predict as run_predict
    from archsearch.runtime.tasks import load_tasks

    tasks = load_tasks(universal, list(packs), trust_pickle=trust_pickle)
    for line in run_predict(tasks, image_files(list(images)), top):
        click.echo(line)


@main.command()
@click.argument("universal", type=click.Path())
@click.argument("packs", nargs=-1, required=True, type=click.Path())
@trust_option
@user_errors
def packs(universal, packs, trust_pickle) -> None:
    """Table of task packs: new parameters, bytes, MACs, accuracy, and memory against fine-tuned copies.

    UNIVERSAL is the universal.pt the tasks share; PACKS are their task.pack files (from run directories).
    """
    from pathlib import Path

    from archsearch.runtime.packs import pack_table
    from archsearch.runtime.tasks import load_tasks

    tasks = load_tasks(universal, list(packs), trust_pickle=trust_pickle)
    click.echo(pack_table(Path(universal), tasks, [Path(p) for p in packs]))


@main.command()
@click.argument("run_dir", type=click.Path())
@click.option("--batches", default="1,32", show_default=True, help="Comma-separated batch sizes.")
@click.option("--threads", default="0", show_default=True,
              help="Comma-separated CPU thread counts, 0 for torch's default. On a small shared machine, try '0,1': "
                   "with several threads a small network's speed-up moves with what else the machine runs.")
@click.option("--rounds", default=5, show_default=True, type=click.IntRange(min=1),
              help="Independent interleaved measurements; the table gives their median and the speed-up's range.")
@click.option("--repeats", default=10, show_default=True, type=click.IntRange(min=1), help="Timed passes per round.")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]),
              help="cuda times both networks on the GPU (cuDNN autotuning), as a GPU run does. Both are timed in "
                   "the layout the run emitted its network for (channels-last; NCHW for runs before that).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@trust_option
@user_errors
def latency(run_dir, batches, threads, rounds, repeats, device, as_json, trust_pickle) -> None:
    """Time a finished run's original and tailored networks side by side on this machine."""
    from pathlib import Path

    from archsearch.runtime.compare import compare, parse_counts, table

    result = compare(Path(run_dir), parse_counts(batches, "--batches"),
                     parse_counts(threads, "--threads", allow_zero=True), rounds, repeats, device,
                     log=lambda m: click.echo(m, err=True), trust_pickle=trust_pickle)
    click.echo(json.dumps(result, indent=2) if as_json else table(result))


@main.command()
@click.argument("run_dir", type=click.Path())
@click.option("--format", "fmt", required=True, type=click.Choice(["onnx", "pt2"]),
              help="onnx: standard ONNX operators (opset 18; needs pip install archsearch[export]); pt2: a "
                   "torch.export program (torch.export.load(FILE).module()).")
@click.option("-o", "--output", metavar="FILE", type=click.Path(), help="Where to write  [default: RUN/tailored.onnx or RUN/tailored.pt2]")
@trust_option
@user_errors
def export(run_dir, fmt, output, trust_pickle) -> None:
    """Export a finished run's tailored network as ONNX or as a torch.export program (.pt2).

    The batch dimension is dynamic; the image shape is the run's (report.json's input_shape).
    Prints the path written.
    """
    from pathlib import Path

    from archsearch.runtime.export import export as run_export

    click.echo(str(run_export(Path(run_dir), fmt, Path(output) if output else None, trust_pickle=trust_pickle)))


@main.command("render", short_help="Draw tailored architectures as in Fig. 4 of the paper.")
@click.argument("targets", nargs=-1, metavar="[TARGET]...")
@click.option("-o", "--out", default="architecture.svg", show_default=True, metavar="FILE",
              help="Picture file: .svg, .png, .pdf, or .dot (needs no Graphviz); a folder gets architecture.svg.")
@click.option("--show-removed", is_flag=True, help="Draw removed blocks faded instead of hiding them.")
@click.option("--row-blocks", type=int, default=None, metavar="N",
              help="Universal blocks per row (default: whole stages, at most 10; 0: one row).")
@click.option("--compact", is_flag=True, help="Leave tensor shapes out of block labels.")
@model_options
@click.option("--skips", default="3", show_default=True, help="With --backbone/--model: proxies per block.")
@trust_option
@user_errors
def render_cmd(targets, out, show_removed, row_blocks, compact, backbone, model_spec, weights, input_size,
               leaf_modules, skips, trust_pickle) -> None:
    """Draw tailored architectures like Fig. 4 of the paper; several TARGETs are stacked block by block.

    TARGET is a run directory, an architecture.json or a tailored .pt. With --backbone/--model and no
    TARGET it draws the untrained student: every candidate proxy, gates at their initial values.
    """
    from archsearch.sources.models import resolve_model
    from archsearch.render.draw import load_architecture, render, stack_dot, student_architecture, to_dot

    if targets:
        archs = [load_architecture(t) for t in targets]
    elif backbone or model_spec:
        source = resolve_model(backbone, model_spec, weights, input_size, require_weights=False,
                               trust_pickle=trust_pickle)
        archs = [student_architecture(source.model, source.input_shape, leaf_modules, skips,
                                      f"{source.name} student (--skips {skips})")]
    else:
        raise UserError("give a TARGET (run directory, architecture.json or tailored .pt) or --backbone/--model")
    kw = dict(show_removed=show_removed, row_blocks=row_blocks, labels="compact" if compact else "full")
    dot = to_dot(archs[0], **kw) if len(archs) == 1 else stack_dot(archs, **kw)
    click.echo(render(dot, out))


@main.command("backbones")
def list_backbones() -> None:
    """List the built-in backbones and their input sizes."""
    import backbones

    for name in sorted(backbones.BACKBONES):
        click.echo(f"{name:16s} input {'x'.join(map(str, backbones.default_input_size(name)))}")


"""What ``archsearch packs`` and ``archsearch predict`` show about tasks sharing universal blocks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from archsearch.data.transform import resize_centre_crop
from archsearch.errors import UserError
from archsearch.runtime.tasks import Task

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def pack_table(universal_path: Path, tasks: list[Task], pack_paths: list[Path]) -> str:
    """Per task: new parameters, bytes on disk, MACs, accuracy; then all tasks against N fine-tuned copies."""
    rows = [("task", "new params", "pack bytes", "MACs", "accuracy")]
    universal_bytes = universal_path.stat().st_size
    total = universal_bytes
    for task, path in zip(tasks, pack_paths):
        r = task.meta.get("report", {})
        size = path.stat().st_size
        total += size
        rows.append((task.name, f"{r.get('task_specific_params', 0):,}", f"{size:,}",
                     f"{r.get('tailored_macs', 0) / 1e6:.2f} M", f"{r.get('tailored_accuracy', float('nan')):.2f} %"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    separate = len(tasks) * universal_bytes
    lines.append(f"universal blocks: {universal_bytes:,} bytes, stored once")
    lines.append(f"all {len(tasks)} tasks: {total:,} bytes  vs  {len(tasks)} fine-tuned copies: about {separate:,} bytes "
                 f"({separate / total:.2f}x more)")
    return "\n".join(lines)


def image_files(targets: list[str]) -> list[Path]:
    """Image files named directly or found (recursively, sorted) in named folders."""
    out: list[Path] = []
    for t in targets:
        p = Path(t)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise UserError(f"'{t}' is neither an image file nor a folder")
    if not out:
        raise UserError(f"no images found in {', '.join(targets)}")
    return out


def preprocess(path: Path, task: Task) -> torch.Tensor:
    """One image as the task's network expects it: channels, size and normalisation."""
    c, h, w = task.input_shape
    try:
        img = Image.open(path).convert("L" if c == 1 else "RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"'{path}' is not a readable image") from exc
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
    x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)
    x = resize_centre_crop(x[None], (h, w))[0]  # as the training images were prepared
    mean = torch.tensor(task.mean[:c]).view(-1, 1, 1)
    std = torch.tensor(task.std[:c]).view(-1, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def predict(tasks: list[Task], images: list[Path], top: int = 3) -> list[str]:
    """Lines: for each image and task, the top classes with their probabilities."""
    lines = []
    for path in images:
        for task in tasks:
            probs = torch.softmax(task(preprocess(path, task)[None]), 1)[0]
            values, idx = probs.topk(min(top, probs.numel()))
            best = ", ".join(f"{task.classes[i]} {v * 100:.1f}%" for v, i in zip(values.tolist(), idx.tolist()))
            lines.append(f"{path}\t{task.name}\t{best}")
    return lines

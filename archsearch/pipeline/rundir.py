"""A run directory: config, checkpoints and outputs; a resumed run must match the run it resumes."""
from __future__ import annotations

import json
import time
from pathlib import Path

from archsearch.pipeline.config import TailorConfig
from archsearch.errors import UserError
from archsearch.io.atomic import atomic_write_json
from archsearch.io.jsonfile import read_json_dict
from archsearch.sources.models import absolute_model_spec
from archsearch.train import distributed
from archsearch.train.distributed import Dist

# What a run trains from, by digest: a resumed run must match it, whatever the paths say.
INPUT_NAMES = {"universal_sha256": "the source network's weights", "data_sha256": "the data"}


class RunDir:
    """A run directory: config, checkpoints, outputs; refuses to resume another configuration."""

    def __init__(self, cfg: TailorConfig, inputs: dict[str, str] | None = None) -> None:
        """``inputs``: digests of what the run trains from (source weights, data), checked on resume."""
        root = Path(cfg.out) if cfg.out else _default_out(cfg.resume)
        self.path = root
        config = root / "config.json"
        if cfg.resume and not config.is_file():
            raise UserError(f"--resume: '{root}' holds no run to resume (no config.json); check --out, or drop "
                            "--resume to start a new run")
        try:
            (root / "checkpoints").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the output directory '{root}': {exc.strerror}; choose another --out") from exc
        if config.exists() and cfg.resume:
            saved = read_json_dict(config, "--resume cannot continue this run; start a new one with another --out")
            if isinstance(saved.get("model"), str):  # runs made before configs named the file absolutely
                saved["model"] = absolute_model_spec(saved["model"])
            defaults = TailorConfig().comparable()  # options newer than the run compare as their defaults
            diff = [k for k, v in cfg.comparable().items() if json.loads(json.dumps(v)) != saved.get(k, defaults.get(k))]
            if diff:
                verb = "differ" if len(diff) > 1 else "differs"
                raise UserError(f"--resume: '{root}' was made with other options ({', '.join(diff[:4])} {verb}); "
                                "resume with the same options or choose a new --out")
            changed = [INPUT_NAMES[k] for k, v in (inputs or {}).items() if saved.get("inputs", {}).get(k, v) != v]
            if changed:
                raise UserError(f"--resume: {' and '.join(changed)} changed since '{root}' was started (same paths, "
                                "other contents); its checkpoints no longer apply: choose a new --out")
        elif any((root / "checkpoints").iterdir()):
            raise UserError(f"'{root}' already holds a run; pass --resume to continue it or choose a new --out")
        atomic_write_json(config, {**cfg.comparable(), **({"inputs": inputs} if inputs else {})})

    @classmethod
    def existing(cls, path: Path) -> "RunDir":
        """A run directory another process (rank 0) has already made and checked."""
        run = cls.__new__(cls)
        run.path = path
        return run

    def ckpt(self, name: str) -> Path:
        """Where stage ``name`` keeps its checkpoint, which a resumed run reads back."""
        return self.path / "checkpoints" / f"{name}.pt"


def _default_out(resume: bool) -> Path:
    runs = Path("runs")
    if resume:
        previous = sorted(p for p in runs.glob("*") if (p / "config.json").exists()) if runs.exists() else []
        if not previous:
            raise UserError("--resume without --out needs an earlier run under ./runs; pass --out DIR")
        return previous[-1]
    return runs / time.strftime("%Y%m%d-%H%M%S")


def run_dir(cfg: TailorConfig, d: Dist, inputs: dict[str, str]) -> RunDir:
    """Rank 0 makes (or checks) the run directory; every rank learns its path, or rank 0's error."""
    run, error = None, None
    if d.is_main:
        try:
            run = RunDir(cfg, inputs)
        except UserError as exc:
            error = str(exc)
    path, error = distributed.broadcast(d, (str(run.path) if run else None, error))
    if error:
        raise UserError(error)
    return run or RunDir.existing(Path(path))

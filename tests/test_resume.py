"""SIGKILL a real tailoring run inside each stage, then --resume it to completion."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tinytask import USER_MODEL, tiny_data

ROOT = Path(__file__).resolve().parents[1]


def _args(tmp: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "archsearch", "tailor", "--model", f"{tmp / 'tiny.py'}:build", "--input-size",
            "3,12,12", "--data", str(tmp / "d.npz"), "--out", str(out), "--quiet", "--teacher-epochs", "8",
            "--student-epochs", "8", "--retrain-epochs", "8", "--sweep", "1,3", "--batch-size", "16"]


RESULTS = ("teacher_accuracy", "student_accuracy", "tailored_accuracy", "tailored_macs", "chosen_k", "chosen_theta")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The run directory of the same run never stopped."""
    tmp = tmp_path_factory.mktemp("whole")
    (tmp / "tiny.py").write_text(USER_MODEL)
    tiny_data(tmp / "d.npz")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(_args(tmp, tmp / "run"), cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return tmp / "run"


@pytest.mark.parametrize("stage", ["teacher", "student", "retrain-k1"])
def test_sigkill_in_stage_then_resume_completes(tmp_path, stage, uninterrupted):
    (tmp_path / "tiny.py").write_text(USER_MODEL)
    tiny_data(tmp_path / "d.npz")
    out = tmp_path / "run"
    ckpt = out / "checkpoints" / f"{stage}.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_args(tmp_path, out), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    state = torch.load(ckpt, weights_only=False)
    assert not state["done"], f"killed after {stage} had finished"
    for f in (out / "checkpoints").glob("*.pt"):
        torch.load(f, weights_only=False)  # no checkpoint is truncated
    assert not (out / "report.json").exists()
    done = subprocess.run(_args(tmp_path, out) + ["--resume"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert [t["k"] for t in report["sweep"] if t["theta"] == 0.05] == [1, 3]
    assert {"teacher_accuracy", "tailored_accuracy", "tailored_macs", "within_tolerance"} <= set(report)
    assert torch.load(ckpt, weights_only=False)["done"]
    # killed mid-epoch, resumed from the last finished epoch: the same training, the same network
    whole = json.loads((uninterrupted / "report.json").read_text())
    assert {k: report[k] for k in RESULTS} == {k: whole[k] for k in RESULTS}
    resumed, reference = (torch.load(d / "tailored.pt", weights_only=False).state_dict() for d in (out, uninterrupted))
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)


def test_resume_refuses_changed_weights_or_data_and_a_new_run_refuses_old_checkpoints(tmp_path):
    from dataclasses import replace

    from archsearch.pipeline.config import TailorConfig
    from archsearch.errors import UserError
    from archsearch.pipeline.rundir import RunDir

    cfg = TailorConfig(out=str(tmp_path / "run"), data="digits")
    inputs = {"universal_sha256": "a" * 64, "data_sha256": "b" * 64}
    RunDir(cfg, inputs)
    (tmp_path / "run" / "checkpoints" / "teacher.pt").write_bytes(b"x")
    RunDir(replace(cfg, resume=True), inputs)  # the same inputs: resumes
    with pytest.raises(UserError, match="the data changed"):
        RunDir(replace(cfg, resume=True), {**inputs, "data_sha256": "c" * 64})
    with pytest.raises(UserError, match="source network's weights changed"):
        RunDir(replace(cfg, resume=True), {**inputs, "universal_sha256": "c" * 64})
    (tmp_path / "run" / "config.json").unlink()  # checkpoints with no record of their run
    with pytest.raises(UserError, match="already holds a run"):
        RunDir(cfg, inputs)


def test_a_run_names_its_model_file_absolutely_and_resumes_one_named_relatively(tmp_path, monkeypatch):
    """So `archsearch latency RUN` rebuilds the model from any folder; runs made before keep resuming."""
    import json
    from dataclasses import replace

    from archsearch.pipeline.config import TailorConfig
    from archsearch.pipeline.rundir import RunDir

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.py").write_text("def build():\n    pass\n")
    cfg = TailorConfig(model="m.py:build", out=str(tmp_path / "run"), data="digits")
    cfg.check()
    cfg = cfg.normalized()
    assert cfg.model == f"{tmp_path / 'm.py'}:build"
    RunDir(cfg)
    config = tmp_path / "run" / "config.json"
    assert json.loads(config.read_text())["model"] == f"{tmp_path / 'm.py'}:build"
    (tmp_path / "run" / "checkpoints" / "teacher.pt").write_bytes(b"x")
    config.write_text(json.dumps({**json.loads(config.read_text()), "model": "m.py:build"}))  # an older run
    RunDir(replace(cfg, resume=True))

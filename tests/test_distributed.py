"""Tailoring under torchrun: 2 CPU processes (gloo, loopback) against one process, same seed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinytask import USER_MODEL, tiny_data

ROOT = Path(__file__).resolve().parents[1]


def _tailor(tmp: Path, out: Path, nproc: int | None) -> dict:
    args = ["-m", "archsearch", "tailor", "--model", f"{tmp / 'tiny.py'}:build", "--input-size", "3,12,12",
            "--data", str(tmp / "d.npz"), "--out", str(out), "--quiet", "--teacher-epochs", "2",
            "--student-epochs", "3", "--retrain-epochs", "1", "--sweep", "0,2", "--batch-size", "32", "--seed", "3",
            "--lr", "0.1", "--student-lr", "0.3", "--gate-lr", "0.3", "--theta", "0", "--theta-sweep", "none"]  # proxies kept: trained gates compared
    if nproc is None:
        cmd = [sys.executable, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-addr", "127.0.0.1", "--master-port", str(29500 + os.getpid() % 1000 + nproc), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    arch = json.loads((out / "architecture.json").read_text())
    report["alphas"] = [e["alpha"] for e in arch["edges"] if e["alpha"] is not None]
    return report


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("dist")
    (tmp / "tiny.py").write_text(USER_MODEL)
    tiny_data(tmp / "d.npz")
    return tmp


@pytest.fixture(scope="module")
def single(task) -> dict:
    """The plain run (no torchrun) both comparisons measure against."""
    return _tailor(task, task / "single", None)


def test_two_processes_agree_and_match_one_process(task, single):
    double = _tailor(task, task / "double", 2)
    assert double["distributed"] == {"world_size": 2, "gates_identical_across_ranks": True}
    assert set(double) == set(single)
    base = lambda r: [t["k"] for t in r["sweep"] if t["theta"] == 0.0]  # noqa: E731 (--theta 0)
    assert base(double) == base(single) == [0, 2]
    assert double["universal_blocks_total"] == single["universal_blocks_total"]
    # Same data, seed and total batch, but per-rank batch-norm statistics and the sharded order
    # differ, and this tiny task's student is chaotic (random frozen blocks): trajectories are not
    # comparable step by step. Stated tolerance: both teachers learn the task, and the tailored
    # accuracies are within 40 points. The exact agreement that matters is checked above (every rank
    # ends with identical gates) and below (one process under torchrun equals a plain run).
    assert single["teacher_accuracy"] >= 90 and double["teacher_accuracy"] >= 90
    assert abs(double["tailored_accuracy"] - single["tailored_accuracy"]) <= 40
    assert double["universal_unchanged"] and single["universal_unchanged"]
    assert sorted(p.name for p in (task / "double").iterdir()) == sorted(p.name for p in (task / "single").iterdir())


def test_one_process_under_torchrun_equals_plain_run(task, single):
    plain = single
    one = _tailor(task, task / "one", 1)
    for key in ("teacher_accuracy", "student_accuracy", "tailored_accuracy", "tailored_macs", "sweep", "alphas"):
        assert one[key] == plain[key], key
    assert len(set(plain["alphas"])) > 2, "gates must have trained for this comparison to mean anything"

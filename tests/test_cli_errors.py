"""Every input a user can get wrong ends in one clear line on stderr, exit status 2, no partial files."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from archsearch.cli import main
from archsearch.errors import UserError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
R20 = SHARED / "cifar10-resnets" / "resnet20-12fca82f.th"
R32 = SHARED / "cifar10-resnets" / "resnet32-d509ac18.th"
needs_shared = pytest.mark.skipif(not R20.exists(), reason="../shared/data is not present")


def run(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("archsearch: error: ")
    assert "Traceback" not in result.stderr
    for f in fragments:
        assert f.lower() in lines[0].lower(), (f, lines[0])


def tailor_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["tailor", "--out", str(tmp_path / "run"), "--quiet", *extra]


def assert_no_output(tmp_path: Path) -> None:
    assert not (tmp_path / "run").exists()


# -- weights ------------------------------------------------------------------------------------
def test_weights_missing(tmp_path):
    r = run(tailor_args(tmp_path, "--backbone", "resnet20", "--weights", str(tmp_path / "nope.th")))
    assert_one_line_error(r, "nope.th")
    assert_no_output(tmp_path)


@needs_shared
def test_weights_truncated(tmp_path):
    bad = tmp_path / "half.th"
    bad.write_bytes(R20.read_bytes()[: R20.stat().st_size // 2])
    r = run(tailor_args(tmp_path, "--backbone", "resnet20", "--weights", str(bad)))
    assert_one_line_error(r, "half.th", "not a readable")
    assert_no_output(tmp_path)


def test_weights_unreadable_text_file(tmp_path):
    bad = tmp_path / "notes.pth"
    bad.write_text("these are not weights")
    assert_one_line_error(run(tailor_args(tmp_path, "--backbone", "resnet20", "--weights", str(bad))), "notes.pth")


@needs_shared
def test_weights_for_another_architecture(tmp_path):
    r = run(tailor_args(tmp_path, "--backbone", "resnet20", "--weights", str(R32)))
    assert_one_line_error(r, "resnet20", "layer")
    assert_no_output(tmp_path)


# -- models -------------------------------------------------------------------------------------
def _model_file(tmp_path: Path, body: str) -> str:
    f = tmp_path / "m.py"
    f.write_text("import torch, torch.nn as nn, torch.nn.functional as F\n" + body)
    return str(f)


def test_model_file_fails_to_import(tmp_path):
    f = _model_file(tmp_path, "def build(:\n")
    assert_one_line_error(run(["inspect", "--model", f"{f}:build"]), "fails to import", "SyntaxError")


def test_model_factory_missing(tmp_path):
    f = _model_file(tmp_path, "def other():\n    return nn.Linear(2, 2)\n")
    assert_one_line_error(run(["inspect", "--model", f"{f}:build"]), "no callable 'build'")


def test_model_factory_returns_no_module(tmp_path):
    f = _model_file(tmp_path, "def build():\n    return 42\n")
    assert_one_line_error(run(["inspect", "--model", f"{f}:build"]), "int", "not a torch.nn.Module")


def test_model_file_that_exits(tmp_path):
    f = _model_file(tmp_path, "import sys\nsys.exit(3)\n")
    assert_one_line_error(run(["inspect", "--model", f"{f}:build"]), "fails to import", "SystemExit(3)")
    f = _model_file(tmp_path, "def build():\n    raise SystemExit('quit')\n")
    assert_one_line_error(run(["inspect", "--model", f"{f}:build"]), "raised SystemExit('quit')")


def test_model_file_that_parses_arguments_on_import_sees_none_of_ours(tmp_path):
    f = _model_file(tmp_path, "import argparse\np = argparse.ArgumentParser()\np.add_argument('--lr', default=0.1)\n"
                              "A = p.parse_args()\ndef build():\n    return nn.Sequential(nn.Conv2d(3, 4, 3))\n")
    assert_one_line_error(run(["inspect", "--model", f"{f}:build"]), "no residual block")


def test_pretrain_on_a_missing_gpu(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = run(["pretrain", "--device", "cuda", "--data", "digits", "-o", str(tmp_path / "w.pt")])
    assert_one_line_error(r, "--device cuda", "--device cpu")
    assert not (tmp_path / "w.pt").exists()


def test_model_spec_without_factory(tmp_path):
    assert_one_line_error(run(["inspect", "--model", "examples/mynet.py"]), "FILE.py:FACTORY")


UNTRACEABLE = '''
class Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.gate = Gate()
        self.fc = nn.Linear(4, 2)
    def forward(self, x):
        x = self.stem(x)
        x = self.gate(self.a(x)) + x
        return self.fc(x.mean((2, 3)))

def build():
    return Net()
'''


def test_untraceable_model_names_module_and_suggests_leaf(tmp_path):
    f = _model_file(tmp_path, UNTRACEABLE)
    r = run(["inspect", "--model", f"{f}:build", "--input-size", "3,8,8"])
    assert_one_line_error(r, "'gate'", "Gate", "control flow", "--leaf Gate")
    ok = run(["inspect", "--model", f"{f}:build", "--input-size", "3,8,8", "--leaf", "Gate", "--json"])
    assert ok.exit_code == 0, ok.output
    assert '"universal_blocks": 1' in ok.output


def test_model_without_residual_blocks(tmp_path):
    f = _model_file(tmp_path, "def build():\n    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), "
                              "nn.Flatten(), nn.Linear(4 * 6 * 6, 2))\n")
    r = run(["inspect", "--model", f"{f}:build", "--input-size", "3,8,8"])
    assert_one_line_error(r, "no residual block", "straight chain")


def test_model_rejects_input_size(tmp_path):
    r = run(["inspect", "--model", "examples/mynet.py:build", "--input-size", "5,32,32"])
    assert_one_line_error(r, "input of shape", "--input-size")


def test_unknown_backbone_lists_known_ones(tmp_path):
    r = run(tailor_args(tmp_path, "--backbone", "resnet21", "--weights", str(tmp_path / "w.pt")))
    assert_one_line_error(r, "resnet21", "resnet20", "resnet50")
    assert_no_output(tmp_path)


# -- data ---------------------------------------------------------------------------------------
def _tailor_data(tmp_path: Path, data: str):
    return run(tailor_args(tmp_path, "--data", data))


def test_data_path_missing(tmp_path):
    assert_one_line_error(_tailor_data(tmp_path, str(tmp_path / "nowhere")), "nowhere")
    assert_no_output(tmp_path)


def test_data_folder_empty(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(_tailor_data(tmp_path, str(tmp_path / "empty")), "empty")
    assert_no_output(tmp_path)


def _png(path: Path, value: int, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(path)


def test_data_one_class_only(tmp_path):
    for i in range(4):
        _png(tmp_path / "one" / "cats" / f"{i}.png", 10 * i)
    assert_one_line_error(_tailor_data(tmp_path, str(tmp_path / "one")), "one class")
    assert_no_output(tmp_path)


def test_data_non_image_file_mixed_in(tmp_path):
    for cls in ("a", "b"):
        for i in range(3):
            _png(tmp_path / "mixed" / cls / f"{i}.png", 40 * i)
    (tmp_path / "mixed" / "b" / "notes.txt").write_text("hello")
    assert_one_line_error(_tailor_data(tmp_path, str(tmp_path / "mixed")), "notes.txt")
    assert_no_output(tmp_path)


def test_data_labels_out_of_range(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((6, 8, 8), np.uint8), y=np.array([0, 1, 0, 1, -3, 1]))
    assert_one_line_error(_tailor_data(tmp_path, str(tmp_path / "bad.npz")), "label")
    assert_no_output(tmp_path)


def test_idx_counts_disagree(tmp_path):
    d = tmp_path / "idx"
    d.mkdir()
    with gzip.open(d / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, 10, 8, 8) + bytes(10 * 64))
    with gzip.open(d / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, 9) + bytes(range(9)))
    assert_one_line_error(_tailor_data(tmp_path, str(d)), "10", "9")
    assert_no_output(tmp_path)


# -- options and output ---------------------------------------------------------------------------
@pytest.mark.parametrize("args, fragment", [
    (["--skips", "0"], "--skips"),
    (["--skips", "many"], "--skips"),
    (["--tolerance", "-1"], "--tolerance"),
    (["--gamma1", "-3"], "--gamma1"),
    (["--train-limit", "0"], "--train-limit"),
    (["--sweep", "1,x"], "--sweep"),
    (["--lr", "-1"], "--lr"),
    (["--student-lr", "0"], "--student-lr"),
    (["--gamma2", "-5"], "--gamma2"),
    (["--max-retrains", "-3"], "--max-retrains"),
    (["--leaf", "NoSuchModule"], "NoSuchModule"),
    (["--theta-sweep", "0.01"], "--theta-sweep"),
    (["--theta-sweep", "0.3,0.2"], "--theta-sweep"),
    (["--tolerance", "nan"], "--tolerance"),
    (["--gamma2", "inf"], "--gamma2"),
    (["--retrain-gamma2", "-1"], "--retrain-gamma2"),
    (["--retrain-gamma2", "nan"], "--retrain-gamma2"),
    (["--seed", "-1"], "--seed"),
    (["--seed", str(2 ** 64)], "--seed"),
    (["--batch-size", str(2 ** 70)], "--batch-size"),
    (["--skips", "²"], "--skips"),
    (["--teacher-epochs", "-1"], "--teacher-epochs"),
    (["--backbone", "nope"], "unknown backbone 'nope'"),  # the name first, before asking for --weights
])
def test_impossible_options(tmp_path, args, fragment):
    assert_one_line_error(run(tailor_args(tmp_path, *args)), fragment)
    assert_no_output(tmp_path)


def test_output_directory_not_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    r = run(["tailor", "--out", str(blocker / "run"), "--quiet", "--data", "digits", "--input-size", "3,32,32"])
    assert_one_line_error(r, "output directory")
    assert blocker.read_text() == "a file, not a folder"


def test_resume_with_other_configuration(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.json").write_text('{"data": "fashion-mnist", "skips": "5"}')
    before = sorted(p.name for p in run_dir.rglob("*"))
    r = run(tailor_args(tmp_path, "--resume", "--data", "digits"))
    assert_one_line_error(r, "--resume", "other options")
    assert sorted(p.name for p in run_dir.rglob("*")) == before
    assert (run_dir / "config.json").read_text() == '{"data": "fashion-mnist", "skips": "5"}'


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(UserError, match="nonesuch"):
        CliRunner().invoke(main, ["--debug", "inspect", "--backbone", "nonesuch"], catch_exceptions=False)


def test_latency_of_a_folder_without_a_finished_run(tmp_path):
    assert_one_line_error(run(["latency", str(tmp_path)]), "no finished run", "--out")


@pytest.mark.parametrize("option, value", [("--batches", "1,x"), ("--batches", "0"), ("--threads", "-1")])
def test_latency_with_bad_counts(tmp_path, option, value):
    assert_one_line_error(run(["latency", str(tmp_path), option, value]), option, value)


def test_resume_of_a_folder_without_a_run(tmp_path):
    assert_one_line_error(run(tailor_args(tmp_path, "--resume")), "--resume", "no run to resume")
    assert_no_output(tmp_path)


@pytest.mark.parametrize("content", ['{"data": "fash', "[1, 2]"])
def test_resume_with_a_damaged_configuration(tmp_path, content):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.json").write_text(content)
    assert_one_line_error(run(tailor_args(tmp_path, "--resume")), "--resume", "config.json")
    assert (run_dir / "config.json").read_text() == content


REPORT = ('{"config": {}, "input_shape": [3, 8, 8], "num_classes": 2, "backbone": "m", "dataset": "d", '
          '"original_macs": 2, "tailored_macs": 1}')


@pytest.mark.parametrize("report, tailored", [
    ('{"config": {', None),                 # truncated report
    ('{"a": 1}', None),                     # not a report
    ('{"config": {}, "input_shape": [3, 8, 8], "num_classes": 2}', None),  # keys the timing reads are missing
    (None, b""),                            # empty network file
    (None, b"not a pickle at all"),         # text as network
])
def test_latency_of_a_damaged_run(tmp_path, report, tailored):
    import torch
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "report.json").write_text(report or REPORT)
    if tailored is None:
        torch.save(torch.nn.Linear(2, 2), run_dir / "tailored.pt")
    else:
        (run_dir / "tailored.pt").write_bytes(tailored)
    assert_one_line_error(run(["latency", str(run_dir)]), str(run_dir))


def test_latency_of_a_run_whose_network_is_a_state_dict(tmp_path):
    import torch
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "report.json").write_text(REPORT)
    torch.save(torch.nn.Linear(2, 2).state_dict(), run_dir / "tailored.pt")
    assert_one_line_error(run(["latency", str(run_dir)]), "not a network")


@pytest.mark.parametrize("args, fragment", [
    (["--epochs", "0"], "--epochs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--lr", "-1"], "--lr"),
    (["--backbone", "nonesuch"], "nonesuch"),
    (["--seed", "-1"], "--seed"),
])
def test_pretrain_rejects_options_before_training(tmp_path, args, fragment):
    assert_one_line_error(run(["pretrain", "--quiet", "-o", str(tmp_path / "w.pt"), *args]), fragment)
    assert not (tmp_path / "w.pt").exists()


def test_pretrain_checks_its_output_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(run(["pretrain", "--quiet", "-o", str(blocker / "w.pt")]), "is a file, not a folder")
    assert_one_line_error(run(["pretrain", "--quiet", "-o", str(tmp_path)]), "is a folder")


def test_predict_top_must_be_positive(tmp_path):
    r = run(["predict", "--universal", "u.pt", "--task", "t.pack", "--top", "0", "img.png"])
    assert r.exit_code == 2 and "--top" in r.stderr


@pytest.mark.parametrize("args, fragment", [
    (["latency", "run", "--rounds", "0"], "--rounds"),
    (["nosuchcommand"], "nosuchcommand"),
    (["tailor", "--bogus"], "--bogus"),
    (["predict"], "IMAGES"),
])
def test_usage_errors_are_one_line_too(args, fragment):
    assert_one_line_error(run(args), fragment, "--help")


def test_latency_of_a_run_whose_model_file_was_named_relatively_elsewhere(tmp_path):
    import torch
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "report.json").write_text(REPORT.replace('"config": {}', '"config": {"model": "elsewhere/m.py:build"}'))
    torch.save(torch.nn.Linear(2, 2), run_dir / "tailored.pt")
    assert_one_line_error(run(["latency", str(run_dir)]), "cannot rebuild", "folder it was started in")

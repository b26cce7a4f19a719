"""End-to-end tailoring on tiny configurations, through the same code path users take."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from archsearch.errors import UserError
from archsearch.io.checkpoint import load_checkpoint
from archsearch.pipeline import TailorConfig, tailor
from tinytask import USER_MODEL, tiny_data as _tiny_data


def tiny_config(tmp: Path, model: str = USER_MODEL, **options: object) -> TailorConfig:
    """A one-epoch-per-stage run of a tiny user model on tiny data in ``tmp``; ``options`` override."""
    (tmp / "tiny.py").write_text(model)
    base = dict(model=f"{tmp / 'tiny.py'}:build", input_size="3,12,12", data=str(_tiny_data(tmp / "d.npz")),
                out=str(tmp / "run"), teacher_epochs=1, student_epochs=1, retrain_epochs=1, sweep="0,2",
                batch_size=32, progress=False)
    return TailorConfig(**{**base, **options})


def resumed(report: dict, out: Path) -> TailorConfig:
    """The configuration of ``tiny_run``'s run again, resuming in ``out``."""
    return TailorConfig(model=report["config"]["model"], input_size="3,12,12", data=report["config"]["data"],
                        out=str(out), teacher_epochs=1, student_epochs=1, retrain_epochs=1, sweep="0,2",
                        batch_size=32, progress=False, resume=True)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[dict, Path]:
    tmp = tmp_path_factory.mktemp("tailor")
    return tailor(tiny_config(tmp), log=lambda m: None), tmp / "run"


def test_user_model_tailors_end_to_end(tiny_run):
    report, run = tiny_run
    for key in ("backbone", "dataset", "teacher_accuracy", "tailored_accuracy", "original_macs", "tailored_macs",
                "original_params", "tailored_params", "task_specific_params", "universal_blocks_total",
                "universal_blocks_kept", "sweep", "within_tolerance"):
        assert key in report, key
    assert report["universal_blocks_total"] == 4
    assert [t["k"] for t in report["sweep"] if t["theta"] == 0.05] == [0, 2]
    assert all(t["k"] == report["chosen_k"] for t in report["sweep"] if t["theta"] != 0.05)
    assert report["universal_unchanged"] is True
    assert report["slim_vs_pruned_student_max_abs_diff"] <= 1e-4  # float tolerance at logits of tens
    assert report["latency_on"] == f"cpu, {torch.get_num_threads()} threads"
    on_disk = json.loads((run / "report.json").read_text())
    assert on_disk["tailored_macs"] == report["tailored_macs"]
    assert (run / "architecture.json").exists()


def test_theta_sweep_prunes_proxies_harder_at_the_chosen_k(tmp_path):
    cfg = tiny_config(tmp_path, sweep="2", theta=0.0, theta_sweep="0.5", tolerance=100)
    report = tailor(cfg, log=lambda m: None)
    first, harder = report["sweep"]
    assert (first["k"], first["theta"]) == (2, 0.0) and (harder["k"], harder["theta"]) == (2, 0.5)
    assert harder["macs"] < first["macs"]
    assert report["chosen_theta"] == 0.5 and report["tailored_macs"] == harder["macs"]
    assert (tmp_path / "run" / "checkpoints" / "retrain-k2-theta0.5.pt").exists()


def test_latency_cost_is_measured_once_and_drives_the_choice(tmp_path):
    cfg = tiny_config(tmp_path, theta_sweep="none", tolerance=100, cost="latency")
    report = tailor(cfg, log=lambda m: None)
    costs = tmp_path / "run" / "costs.json"
    measured = json.loads(costs.read_text())
    assert report["cost"] == "latency" and measured[""] > 0
    shares = {t["k"]: t["cost_share"] for t in report["sweep"]}
    assert shares[2] < shares[0]  # two blocks fewer cost less measured time
    assert report["chosen_k"] == 2 and report["tailored_cost_share"] == shares[2]  # everything within tolerance 100
    with pytest.raises(UserError, match="--cost"):
        TailorConfig(cost="flops").check()
    before = costs.stat().st_mtime_ns
    again = tailor(replace(cfg, resume=True), log=lambda m: None)
    assert costs.stat().st_mtime_ns == before
    assert {t["k"]: t["cost_share"] for t in again["sweep"]} == shares
    costs.write_text('{"stem": 0.1}')
    with pytest.raises(UserError, match="costs.json"):
        tailor(replace(cfg, resume=True), log=lambda m: None)


def test_a_model_that_refuses_channels_last_is_emitted_and_timed_nchw(tmp_path):
    """A user head that flattens a spatial map with .view runs only NCHW: the run says so and goes on."""
    source = USER_MODEL.replace("self.out = nn.Linear(16, 3)", "self.out = nn.Linear(16 * 6 * 6, 3)").replace(
        "return self.out(torch.flatten(F.adaptive_avg_pool2d(self.body(self.stem(x)), 1), 1))",
        "y = self.body(self.stem(x))\n        return self.out(y.view(y.size(0), -1))")
    cfg = tiny_config(tmp_path, model=source)
    said: list[str] = []
    report = tailor(cfg, log=said.append)
    assert report["memory_format"] == "nchw"
    assert any(m.startswith("note: this network does not run in channels_last (view size") for m in said)
    assert report["slim_vs_pruned_student_max_abs_diff"] <= 1e-4  # float tolerance at logits of tens


def test_resume_finished_run_reuses_checkpoints(tiny_run, tmp_path):
    report, run = tiny_run
    again = tailor(resumed(report, run), log=lambda m: None)
    assert again["teacher_accuracy"] == report["teacher_accuracy"]
    assert [t["val_accuracy"] for t in again["sweep"]] == [t["val_accuracy"] for t in report["sweep"]]


def test_task_pack_shares_universal_blocks_and_predicts_like_tailored(tiny_run):
    from archsearch import load_tasks

    report, run = tiny_run
    (task,) = load_tasks(run / "universal.pt", [run / "task.pack"])
    tailored = torch.load(run / "tailored.pt", weights_only=False).eval()
    assert report["memory_format"] == "channels_last" and task.memory_format == torch.channels_last
    four_d = [p for p in tailored.parameters() if p.dim() == 4]
    assert four_d and all(p.is_contiguous(memory_format=torch.channels_last) for p in four_d)  # saved as it runs
    x = torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        expected = tailored.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
        assert torch.equal(task(x), expected)  # the task feeds its network in the layout it was emitted for
        assert torch.allclose(task(x), tailored(x), atol=1e-5)  # and NCHW maps give the same logits
    assert report["task_pack_bytes"] < report["universal_bytes"]


def test_two_packs_share_one_copy_of_universal_tensors(tiny_run):
    from archsearch import load_tasks

    _, run = tiny_run
    a, b = load_tasks(run / "universal.pt", [run / "task.pack", run / "task.pack"])
    shared_a = {p.data_ptr() for n, p in a.module.named_parameters() if not n.startswith(("proxies", "out"))}
    shared_b = {p.data_ptr() for n, p in b.module.named_parameters() if not n.startswith(("proxies", "out"))}
    assert shared_a and shared_a == shared_b
    task_a = {t.data_ptr() for n, t in a.module.state_dict().items() if n.startswith("task_")}
    task_b = {t.data_ptr() for n, t in b.module.state_dict().items() if n.startswith("task_")}
    assert task_a and task_b and not (task_a & task_b)


def test_a_pack_that_needs_nchw_keeps_the_shared_blocks_nchw(tiny_run, tmp_path):
    """Beside a channels-last pack, one whose network refused channels-last (its report says nchw) must not
    find the blocks it shares moved to channels-last; both still predict what they did alone."""
    from archsearch import load_tasks

    _, run = tiny_run
    pack = torch.load(run / "task.pack", weights_only=True)
    torch.save({**pack, "memory_format": "nchw"}, tmp_path / "nchw.pack")
    x = torch.randn(3, 3, 12, 12)
    (alone,) = load_tasks(run / "universal.pt", [run / "task.pack"])
    cl, nchw = load_tasks(run / "universal.pt", [run / "task.pack", tmp_path / "nchw.pack"])
    assert nchw.memory_format == torch.contiguous_format
    assert all(p.is_contiguous() for p in nchw.module.parameters())
    with torch.no_grad():
        assert torch.allclose(cl(x), alone(x), atol=1e-5) and torch.allclose(nchw(x), alone(x), atol=1e-5)


def test_task_pack_is_data_only(tiny_run):
    """A pack holds tensors, its graph as JSON and metadata, no code and no pickled module: it loads
    with weights_only=True, and so does universal.pt."""
    from archsearch.io.pack import PACK_FORMAT, UNIVERSAL_FORMAT, unpack_tensors
    from archsearch.runtime.tasks import load_universal

    _, run = tiny_run
    pack = torch.load(run / "task.pack", weights_only=True)
    assert pack["format"] == PACK_FORMAT == "archsearch-task-pack/3"
    assert torch.load(run / "universal.pt", weights_only=True)["format"] == UNIVERSAL_FORMAT
    tensors = unpack_tensors(pack)
    assert tensors and all(isinstance(t, torch.Tensor) for t in tensors.values())
    assert "forward_source" not in pack and json.loads(pack["graph"])["nodes"][-1]["op"] == "output"
    universal = load_universal(run / "universal.pt")
    assert all(name.startswith("task_") for name in tensors)
    shared = {k for k in universal.state_dict() if not k.startswith("out.")}
    tailored = torch.load(run / "tailored.pt", weights_only=False)
    own = sum(t.numel() for k, t in tailored.state_dict().items() if k not in shared)
    assert sum(t.numel() for t in tensors.values()) == own  # exactly the task's tensors, no universal one


def test_a_teacher_no_better_than_feature_extraction_fails_the_run_with_its_report(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import archsearch.pipeline.search as search_module
    from archsearch.cli import main
    from archsearch.errors import RunFailed

    real = search_module.Search.fine_tune_teacher

    def no_better(self):  # the teacher scores under what feature extraction scored on validation
        teacher, teacher_bg, _ = real(self)
        fe = load_checkpoint(self.run.ckpt("feature-extraction"))
        return teacher, teacher_bg, search_module.Scores(fe["val"] - 1, fe["test"])

    monkeypatch.setattr(search_module.Search, "fine_tune_teacher", no_better)
    with pytest.raises(RunFailed, match="no better than feature extraction"):
        tailor(tiny_config(tmp_path), log=lambda m: None)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["status"] == "failed" and "no better than feature extraction" in report["failure"]
    assert report["selection_split"] == "validation" and "chosen_k" not in report  # no pick was made
    cfg = tiny_config(tmp_path / "cli") if (tmp_path / "cli").mkdir() is None else None
    result = CliRunner().invoke(main, ["tailor", "--model", cfg.model, "--input-size", "3,12,12", "--data", cfg.data,
                                       "--out", str(tmp_path / "cli" / "run"), "--teacher-epochs", "1", "--quiet"])
    assert result.exit_code == 3 and result.stderr.splitlines()[-1].startswith("archsearch: failed: the fine-tuned teacher")


def test_report_gives_validation_and_test_accuracy_of_every_network(tiny_run):
    report, _ = tiny_run
    assert report["selection_split"] == report["tolerance_judged_on"] == "validation"
    for part in ("feature_extraction", "teacher", "tailored"):
        assert set(report[part]) >= {"val", "test"}, part
    assert report["student"]["val_accuracy"] is not None and report["student"]["test_accuracy"] is not None
    for trial in report["sweep"]:
        assert trial["val_accuracy"] is not None and trial["test_accuracy"] is not None
        assert trial["stage"]["epochs"] >= 1
    assert report["val_images"] > 0 and report["peak_rss_bytes"] > 0


def test_the_chosen_trial_is_exactly_the_network_that_was_measured(tiny_run):
    """Trials own their proxies and classifier: retraining another k later cannot change the chosen one."""
    report, _ = tiny_run
    chosen = [t for t in report["sweep"] if (t["k"], t["theta"]) == (report["chosen_k"], report["chosen_theta"])]
    assert len(chosen) == 1 and len(report["sweep"]) >= 2  # another trial was retrained after or before it
    assert report["tailored"]["val"] == chosen[0]["val_accuracy"]
    assert report["tailored"]["test"] == chosen[0]["test_accuracy"]


def test_latency_command_times_a_finished_run_again(tiny_run):
    from click.testing import CliRunner

    from archsearch.cli import main

    report, run = tiny_run
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # a count that neither "0" nor "1" would leave behind by accident
    try:
        result = CliRunner().invoke(main, ["latency", str(run), "--batches", "1,4", "--threads", "0,1", "--rounds", "2",
                                           "--repeats", "1", "--json"], catch_exceptions=False)
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)  # the JSON alone on stdout; progress lines go to stderr
    assert result.stderr.count("timing batch") == 4
    assert out["mac_factor"] == pytest.approx(report["original_macs"] / report["tailored_macs"])
    assert out["memory_format"] == report["memory_format"] == "channels_last"  # timed as its code was written
    assert [(r["threads"], r["batch"]) for r in out["rows"]] == [(3, 1), (3, 4), (1, 1), (1, 4)]
    for r in out["rows"]:
        low, high = r["speedup_range"]
        assert r["original_ms"] > 0 and r["tailored_ms"] > 0 and low <= high
    assert after == 3  # the caller's thread count is restored


def test_a_tailored_network_measured_slower_is_reported(tiny_run, tmp_path, monkeypatch):
    import shutil

    import archsearch.pipeline.artifacts as artifacts_module

    report, run = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    monkeypatch.setattr(artifacts_module, "median_latency", lambda *a, **k: {"original": 0.010, "tailored": 0.012})
    again = tailor(resumed(report, copy), log=lambda m: None)
    assert any("not faster than the original" in w and "10.0 → 12.0 ms" in w for w in again["warnings"])


def test_report_warns_when_the_tailored_network_is_not_faster():
    from archsearch.pipeline.advice import not_faster

    assert not_faster({"batch32": {"original": 0.0200, "tailored": 0.0150}}) is None
    warning = not_faster({"batch32": {"original": 0.1148, "tailored": 0.1265}})
    assert "114.8 → 126.5 ms" in warning and "batch 32" in warning and "--theta" in warning


def test_gamma1_defaults_to_a_third_of_the_universal_blocks(tiny_run):
    import backbones
    from archsearch.graph.trace import trace
    from archsearch.pipeline.config import default_gamma1

    report, run = tiny_run
    assert report["config"]["gamma1"] == default_gamma1(4) == 4 / 3  # the tiny model has 4 universal blocks
    assert json.loads((run / "config.json").read_text())["gamma1"] == 4 / 3  # resolved before it is stored
    counts = {name: len(trace(backbones.get_backbone(name), (3, 32, 32)).universal()) for name in ("resnet20", "resnet56")}
    assert counts == {"resnet20": 9, "resnet56": 27}
    assert (default_gamma1(counts["resnet20"]), default_gamma1(counts["resnet56"])) == (3.0, 9.0)

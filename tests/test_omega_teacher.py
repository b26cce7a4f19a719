"""Omega's teacher: a frozen inference copy whose targets match the teacher's own outputs."""
import copy

import pytest
import torch

import backbones
from archsearch.graph.blockgraph import BlockGraph
from archsearch.graph.classifier import replace_classifier
from archsearch.graph.trace import trace
from archsearch.passes.codegen import build_student
from archsearch.train.stages import OmegaTeacher, low_precision_dtype


def _teacher() -> torch.fx.GraphModule:
    torch.manual_seed(0)
    shape = backbones.default_input_size("resnet20")
    bg = replace_classifier(trace(backbones.get_backbone("resnet20"), shape), 10)
    teacher = build_student(BlockGraph(bg.g.copy(), copy.deepcopy(bg.gm)))
    for m in teacher.modules():  # batch-norms with non-trivial statistics, so folding them matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return teacher.eval()


def _relative_mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).pow(2).mean() / b.float().pow(2).mean())


def test_fp32_targets_equal_the_teacher_and_leave_it_untouched():
    teacher = _teacher()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        logits, feats = teacher(x)
    t_logits, t_feats = OmegaTeacher(teacher, fp32=True)(x)
    assert t_logits.dtype == torch.float32 and not t_logits.requires_grad
    assert torch.allclose(t_logits, logits, atol=1e-4, rtol=1e-4)
    assert set(t_feats) == set(feats)
    assert all(torch.allclose(t_feats[k], feats[k], atol=1e-4, rtol=1e-4) for k in feats)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


@pytest.mark.skipif(low_precision_dtype(torch.device("cpu")) is None, reason="no native bfloat16 on this CPU")
def test_bfloat16_targets_are_close_to_float32_targets():
    teacher = _teacher()
    x = torch.randn(8, 3, 32, 32)
    exact_logits, exact = OmegaTeacher(teacher, fp32=True)(x)
    fast_logits, fast = OmegaTeacher(teacher)(x)
    assert fast["x9"].dtype == torch.bfloat16
    assert _relative_mse(fast_logits, exact_logits) < 1e-3
    assert max(_relative_mse(fast[k], exact[k]) for k in exact) < 1e-3

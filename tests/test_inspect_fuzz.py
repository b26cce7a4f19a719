"""Random models fed to inspect: a BlockGraph or the clear UserError, never a crash."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archsearch.errors import UserError
from archsearch.tools.inspect import inspect_model
from randnets import any_models


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=any_models(), skips=st.sampled_from([None, 1, 3, "dense"]))
def test_inspect_gives_a_block_graph_or_a_clear_error(case, skips):
    model, kind = case
    try:
        desc = inspect_model(model, (3, 8, 8), skips=skips)
    except UserError as exc:
        message = str(exc)
        assert "\n" not in message
        if kind == "plain":  # a chain of one convolution: nothing for a proxy to stand in for
            assert "no residual block" in message and len(model.body) < 2
        else:
            assert kind == "untraceable" and "Untraceable" in message and "--leaf Untraceable" in message
        return
    if kind == "plain":  # every convolution after the first is a block of the chain
        assert desc["universal_blocks"] == len(model.body) - 1
        return
    assert kind == "residual"
    assert desc["universal_blocks"] == len(model.blocks)
    assert desc["total_macs"] == sum(b["macs"] for b in desc["blocks"])
    assert ("proxies" in desc) == bool(skips)

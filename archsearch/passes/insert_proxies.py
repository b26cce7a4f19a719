"""Graph pass: give every universal block k proxies from the nearest earlier nodes."""
from __future__ import annotations

from archsearch.errors import UserError
from archsearch.graph.blockgraph import BlockGraph, node_name
from archsearch.graph.cost import count_params, module_macs
from archsearch.graph.trace import SUPPORTED, feature_map_problem
from archsearch.nn.proxy import make_proxy

PROXY_LOGIT = -2.0


def parse_skips(skips: int | str) -> int | None:
    """``3`` → 3, ``"dense"`` → None (all earlier nodes); anything else is a UserError."""
    if isinstance(skips, str):
        if skips.strip().lower() == "dense":
            return None
        if not (skips.strip().isascii() and skips.strip().isdigit()):  # isdigit alone admits '²'
            raise UserError(f"--skips must be a positive whole number or 'dense', not '{skips}'")
        skips = int(skips)
    if skips < 1:
        raise UserError(f"--skips must be at least 1 (got {skips}): each block needs a proxy to stand in for it")
    return skips


def proxy_target(src: str, dst: str) -> str:
    """Module path of the proxy from ``src`` to ``dst`` inside generated modules."""
    return f"proxies.{src}_{dst}"


def insert_proxies(bg: BlockGraph, skips: int | str = 3) -> BlockGraph:
    """New BlockGraph where block l gets proxies from x_{l-1} … x_{l-k} (gate logit −2)."""
    k = parse_skips(skips)
    problem = feature_map_problem(bg)
    if problem:
        raise UserError(problem)
    out = bg.copy()
    for (_, dst, _), attrs in bg.iter_attrs("universal"):
        index = bg.node(dst)["index"]
        first = 0 if k is None else max(index - k, 0)
        for p in range(index - 1, first - 1, -1):
            src = node_name(p)
            if src not in bg.g:
                continue
            in_shape = bg.node(src)["shape"]
            if len(in_shape or ()) != 3:
                raise UserError(f"block {attrs['name']!r} reads a tensor of shape {in_shape}; {SUPPORTED}")
            module = make_proxy(in_shape, attrs["out_shape"], attrs["macs"])
            out.g.add_edge(src, dst, key="proxy", kind="proxy", name=f"proxy {src}→{dst}", nodes=[],
                           in_node=bg.node(src)["fx"], out_node=None, in_shape=in_shape,
                           out_shape=attrs["out_shape"], macs=module_macs(module, in_shape),
                           params=count_params(module.parameters()), logit=PROXY_LOGIT, module=module,
                           target=proxy_target(src, dst))
    return out

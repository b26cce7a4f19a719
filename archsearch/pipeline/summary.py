"""The human summary printed at the end of a tailoring run, from its report.json."""
from __future__ import annotations


def _m(n: float) -> str:
    """A count in millions, or thousands where millions would print as 0.00 M."""
    return f"{n / 1e6:.2f} M" if n >= 1e5 or n == 0 else f"{n / 1e3:.2f} k"


def _where(report: dict) -> list[str]:
    """Device, threads and memory layout the latency was measured with (runs before layouts: no layout)."""
    return [report["latency_on"]] + ([report["memory_format"].replace("_", "-")] if "memory_format" in report else [])


def summary(report: dict) -> str:
    """A few aligned lines: accuracy, MACs, parameters, blocks and latency, original vs tailored."""
    lat1 = report["latency_seconds"]["batch1"]
    lat32 = report["latency_seconds"]["batch32"]
    mac_ratio = report["original_macs"] / max(report["tailored_macs"], 1)
    lines = [
        f"archsearch: {report['backbone']} tailored to {report['dataset']}"
        + (f"  ({report['run_dir']})" if "run_dir" in report else ""),
        f"  accuracy     teacher {report['teacher_accuracy']:.2f} %   tailored {report['tailored_accuracy']:.2f} %   "
        f"({'within' if report['within_tolerance'] else 'NOT within'} {report['tolerance']} points)"
        + (f"   feature extraction {report['feature_extraction_accuracy']:.2f} %"
           if "feature_extraction_accuracy" in report else ""),
        f"  MACs         {_m(report['original_macs'])} → {_m(report['tailored_macs'])}  ({mac_ratio:.2f}x fewer)",
        f"  parameters   {_m(report['original_params'])} → {_m(report['tailored_params'])}  "
        f"(task-specific {_m(report['task_specific_params'])})",
        f"  blocks       {report['universal_blocks_kept']} of {report['universal_blocks_total']} universal blocks kept",
        f"  latency      batch 1: {lat1['original'] * 1e3:.2f} → {lat1['tailored'] * 1e3:.2f} ms   "
        f"batch 32: {lat32['original'] * 1e3:.1f} → {lat32['tailored'] * 1e3:.1f} ms "
        f"({lat32['original'] / lat32['tailored']:.2f}x faster)"
        + (f"   ({', '.join(_where(report))})" if "latency_on" in report else ""),
        f"  choice       {report['selection']}",
        f"  universal blocks unchanged: {report['universal_unchanged']}",
    ]
    lines += [f"  warning      {w}" for w in report.get("warnings", [])]
    return "\n".join(lines)

"""keep_freed_memory(): a freed feature map's pages are reused instead of faulted in again."""
import platform
import subprocess
import sys

import pytest

# A 16-channel 3x3 convolution at batch 64 on 32x32 maps, as in a CIFAR ResNet's first stage: its
# 4 MiB output is 1,024 pages, each faulted in again whenever the freed output went back to the kernel.
_PROBE = """
import resource, sys, torch
from archsearch.platform.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "kept" else None
conv, x = torch.nn.Conv2d(16, 16, 3, padding=1), torch.randn(64, 16, 32, 32)
with torch.no_grad():
    for _ in range(3):
        conv(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        conv(x)
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def _faults_per_call(mode: str) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, float(faults)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_tensors_are_not_faulted_in_again():
    applied, kept = _faults_per_call("kept")
    assert applied == "True"
    if kept >= 50:  # the contrast, for the message only
        pytest.fail(f"{kept:.0f} page faults per call with freed memory kept "
                    f"({_faults_per_call('default')[1]:.0f} without)")

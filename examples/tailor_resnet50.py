"""Tailor torchvision's ResNet-50 object to an ImageFolder with archsearch's Python API.

    python examples/tailor_resnet50.py /data/flowers --weights resnet50-11ad3fa6.pth --out runs/flowers
    python examples/tailor_resnet50.py digits --size 32 --epochs 6 --sweep 8 --lr 1e-3  # built-in data, random weights
"""
import argparse

import torch

import archsearch


def tailor_images(model, data, size=224, weights=None, epochs=None, **options):
    """Tailor ``model`` to ``data`` (an ImageFolder path or built-in name) at ``size`` x ``size`` pixels."""
    lengths = {f"{stage}_epochs": epochs for stage in ("teacher", "student", "retrain")} if epochs else {}
    return archsearch.tailor(model, data, example_input=torch.zeros(1, 3, size, size), weights=weights,
                             **lengths, **options)


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, kind, default in (("data", str, None), ("--weights", str, None), ("--out", str, "runs/resnet50"),
                                ("--size", int, 224), ("--epochs", int, None), ("--sweep", str, "auto"), ("--lr", float, .01)):
        cli.add_argument(flag, type=kind, default=default)
    a = cli.parse_args()
    resnet50 = archsearch.import_torchvision().models.resnet50()  # or: import torchvision
    result = tailor_images(resnet50, a.data, a.size, a.weights, a.epochs, sweep=a.sweep, lr=a.lr, out=a.out)
    print(f"{result.report['universal_blocks_kept']}/{result.report['universal_blocks_total']} blocks kept, "
          f"{result.report['tailored_accuracy']:.2f} % test accuracy; picture: {result.render(f'{a.out}/arch.svg')}")

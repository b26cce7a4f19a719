"""archsearch: tailor a pre-trained residual network to a new task (NetTailor on a torch.fx graph IR)."""
from setuptools import find_packages, setup

EXPORT = ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.18"]
TORCHVISION = ["torchvision>=0.15"]
TIMM = ["timm>=0.9", "safetensors>=0.3", *TORCHVISION]

setup(
    name="archsearch",
    version="0.1.0",
    description="Tailor pre-trained residual networks to new tasks by changing their architecture (NetTailor)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["archsearch", "archsearch.*", "backbones", "backbones.*"]),
    package_data={"archsearch": ["weights/*.pt"]},
    install_requires=[
        "torch>=2.1",
        "networkx>=3.0",
        "numpy>=1.24",
        "graphviz>=0.20",
        "click>=8.1",
        "tqdm>=4.60",
        "pillow>=9.0",
        "mlxtend>=0.22",
        "scikit-learn>=1.2",
    ],
    extras_require={
        # archsearch export --format onnx: torch's ONNX exporter needs onnx and onnxscript; onnxruntime runs the file
        "export": EXPORT,
        # --model torchvision:NAME / timm:NAME (model definitions only: nothing is downloaded)
        "torchvision": TORCHVISION,
        "timm": TIMM,
        "dev": ["pytest>=7", "hypothesis>=6", *EXPORT, *TIMM],  # make install: the tests export and use the zoos
        "bench": ["matplotlib>=3.6"],
    },
    entry_points={"console_scripts": ["archsearch = archsearch.cli:main"]},
)

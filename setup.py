"""archsearch: tailor a pre-trained residual network to a new task (NetTailor on a torch.fx graph IR)."""
from setuptools import find_packages, setup

setup(
    name="archsearch",
    version="0.1.0",
    description="Tailor pre-trained residual networks to new tasks by changing their architecture (NetTailor)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["archsearch", "archsearch.*", "backbones", "backbones.*"]),
    package_data={"archsearch": ["weights/*.pt", "nn/*.cpp"]},
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
        "ninja>=1.10",  # torch.utils.cpp_extension builds the fused proxy kernel with it (archsearch/nn/pointwise.py)
    ],
    extras_require={"dev": ["pytest>=7", "hypothesis>=6"], "bench": ["matplotlib>=3.6"]},
    entry_points={"console_scripts": ["archsearch = archsearch.cli:main"]},
)

"""Task data: built-in data sets and users' folders/files, preprocessed once into memory.

    td = load_task_data("fashion-mnist", input_size=(3, 32, 32), mean=0.5, std=0.25)
    describe(td)  # 'Fashion-MNIST: 60000 train / 10000 test images, 10 classes, ...'
"""
from archsearch.data.dataset import TensorImageDataset
from archsearch.data.sources import BUILTINS, FASHION_MNIST_CLASSES
from archsearch.data.task import TaskData, describe, load_task_data

__all__ = ["BUILTINS", "FASHION_MNIST_CLASSES", "TaskData", "TensorImageDataset", "describe",
           "load_task_data"]

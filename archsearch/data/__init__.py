"""Task data: built-in data sets and users' folders/files, split into train / validation / test,
preprocessed once into memory (or streamed from disk when an image folder exceeds the memory
budget), augmented for training only.

    td = load_task_data("fashion-mnist", input_size=(3, 32, 32), mean=0.5, std=0.25)
    describe(td)  # 'Fashion-MNIST: 54,000 train / 6,000 validation / 10,000 test images, ...'
"""
from archsearch.data.augment import AUGMENTS
from archsearch.data.dataset import ImageDataset, StreamingImageDataset, TensorImageDataset
from archsearch.data.memory import memory_budget, parse_memory, peak_rss_bytes
from archsearch.data.sources import BUILTINS, FASHION_MNIST_CLASSES
from archsearch.data.task import TaskData, describe, load_task_data
from archsearch.data.transform import resize_centre_crop

__all__ = ["AUGMENTS", "BUILTINS", "FASHION_MNIST_CLASSES", "ImageDataset", "StreamingImageDataset",
           "TaskData", "TensorImageDataset", "describe", "load_task_data", "memory_budget",
           "parse_memory", "peak_rss_bytes", "resize_centre_crop"]

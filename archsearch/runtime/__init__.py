"""A tailored network after its run: tasks loaded onto shared universal blocks, their packs, timing
against the original again, and export to ONNX or torch.export."""
from archsearch.runtime.tasks import Task, attach, load_tasks, load_universal

__all__ = ["Task", "attach", "load_tasks", "load_universal"]

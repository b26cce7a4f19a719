"""Files archsearch writes: atomic writes and checkpoints."""
from archsearch.io.atomic import (atomic_torch_save, atomic_write_bytes, atomic_write_json,
                                  atomic_write_text, atomic_write_with)
from archsearch.io.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["atomic_torch_save", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
           "atomic_write_with", "load_checkpoint", "save_checkpoint"]

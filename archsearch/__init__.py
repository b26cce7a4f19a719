"""archsearch: tailor a pre-trained residual network to a new task (NetTailor)."""

__version__ = "0.1.0"


def load_tasks(universal, packs):  # noqa: ANN001, ANN201 - thin re-export, see archsearch.runtime
    """Load shared universal blocks once and one module per task pack (see :mod:`archsearch.runtime`)."""
    from archsearch.runtime import load_tasks as _load_tasks

    return _load_tasks(universal, packs)

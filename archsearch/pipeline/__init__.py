"""The NetTailor pipeline over a ``TailorConfig``: search, then export, then report."""
from archsearch.pipeline.config import TailorConfig
from archsearch.pipeline.run import tailor

__all__ = ["TailorConfig", "tailor"]

"""archsearch: tailor a pre-trained residual network to a new task (NetTailor)."""

__version__ = "0.1.0"

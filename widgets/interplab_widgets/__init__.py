"""interplab-widgets: anywidget views for interpretability tensors, no build step, no CDN.

Each view takes plain arrays (numpy, or torch tensors by duck typing), validates
them, ships them to the browser as binary buffers and exports to standalone HTML.
"""

from ._base import InterplabView
from .attention import AttentionView

__all__ = ["AttentionView", "InterplabView"]
__version__ = "0.1.0"

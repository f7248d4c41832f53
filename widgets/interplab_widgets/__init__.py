"""interplab-widgets: anywidget views for interpretability tensors, no build step, no CDN.

Each view takes plain arrays (numpy, or torch tensors by duck typing), validates
them, ships them to the browser as binary buffers and exports to standalone HTML.
"""

from ._base import InterplabView
from .attention import AttentionView
from .feature import FeatureDashboard
from .logit_lens import LogitLensView
from .patching import PatchingHeatmap
from .tokens import TokenView

__all__ = ["AttentionView", "FeatureDashboard", "InterplabView", "LogitLensView", "PatchingHeatmap", "TokenView"]
__version__ = "0.1.0"

"""interplab: a hands-on course in mechanistic interpretability, on models you can check."""
__version__ = "0.1.0"

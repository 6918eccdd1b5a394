"""A multimodal, multilingual virtual tour guide."""

__version__ = "0.1.0"

from .errors import GuideError, ModelUnavailable, TourError  # noqa: E402

__all__ = ["GuideError", "ModelUnavailable", "TourError", "__version__"]

"""Mobile image-restoration model zoo: models, data, metrics and tiled inference in PyTorch.

Importing ``zoo`` needs only torch, numpy and Pillow; mobile backends are imported lazily by
``quantize`` and ``export_mobile``.
"""

__version__ = "0.1.0"

"""Getting ONNX out of PyTorch frameworks (needs the ``export`` extra: torch, timm)."""

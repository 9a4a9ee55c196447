"""Export to mobile formats (ExecuTorch, Core ML, TFLite/LiteRT, ONNX). Backends are imported lazily."""

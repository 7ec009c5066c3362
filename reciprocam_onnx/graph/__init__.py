"""ONNX plumbing: loading models, graphsurgeon helpers, ONNX Runtime sessions, axis following."""

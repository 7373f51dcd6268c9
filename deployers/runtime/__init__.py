"""Files that ship inside every deploy bundle: the predictor and its HTTP server (numpy + onnxruntime only)."""

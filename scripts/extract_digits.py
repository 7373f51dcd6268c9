"""Extract the built-in digits dataset from scikit-learn's copy (run once, by a developer).

UCI "Optical Recognition of Handwritten Digits" (Alpaydin & Kaynak), CC BY 4.0. The product
ships the resulting ``core/data/digits.npz`` and does not depend on scikit-learn.
"""
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

out = Path(__file__).resolve().parent.parent / "core" / "data" / "digits.npz"
digits = load_digits()
images = digits.images.astype(np.uint8)  # values 0..16
np.savez_compressed(out, images=images, labels=digits.target.astype(np.uint8))
print(f"wrote {out}: {images.shape} images, {out.stat().st_size} bytes")

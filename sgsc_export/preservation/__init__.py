"""Preservation-set selectors: scikit-learn-style estimators (``fit`` → ``selected_indices_``, ``scores_``)
that choose the hard and representative *training* samples the objective's λ term keeps right.

``images`` (top-2 margin, Grad-CAM saliency, k-means diversity) and ``text`` (per-sequence loss and margin)
share one private base class (``base``).
"""

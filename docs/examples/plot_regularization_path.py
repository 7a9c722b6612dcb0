"""
A regularization path
=====================

As the weight decay ``lam`` grows, the convex program keeps fewer groups: the path lists the
optimal architectures from wide to a single neuron, each solve certified and warm-started from
the last.
"""
import numpy as np

from convexgan import ConvexReLU, plot_regularization_path, regularization_path

rng = np.random.default_rng(0)
X = rng.standard_normal((300, 5))
y = np.maximum(X[:, 0], 0) - np.maximum(X[:, 1] - X[:, 2], 0) + 0.05 * rng.standard_normal(300)

path = regularization_path(X, y, estimator=ConvexReLU(activation="gated", n_patterns=100, tol=1e-6), n_lams=20, progress=False)
for lam, width, gap in zip(path.lams[::4], path.n_neurons[::4], path.gaps[::4]):
    print(f"lam {lam:.2e}: {width:3d} neurons, certified gap {gap:.1e}")

# %%
# The figure shows the width, the objective and the certified gap along the path.
fig = plot_regularization_path(path)

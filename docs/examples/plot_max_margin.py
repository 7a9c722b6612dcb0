"""
Max-margin networks and gradient flow
=====================================

On orthogonally separable data (two classes in opposite cones: positive inner products within a
class, non-positive across), gradient descent on the unregularized logistic loss from a small
start converges to the two-layer ReLU network of largest normalized margin (Wang & Pilanci,
ICLR 2022). That network is a convex program: :func:`convexgan.max_margin.max_margin` solves it
over every activation pattern and certifies it by its dual.
"""
import matplotlib.pyplot as plt
import numpy as np

from convexgan import gradient_flow, max_margin

rng = np.random.default_rng(0)
angle = np.deg2rad(np.r_[rng.uniform(10, 80, 12), rng.uniform(190, 260, 12)])
radius = rng.uniform(0.5, 2, angle.size)
X = np.c_[radius * np.cos(angle), radius * np.sin(angle)]
y = np.r_[np.ones(12), -np.ones(12)]

best = max_margin(X, y, n_patterns="all")
print(f"max-margin optimum: normalized margin {best.margin_:.5f}, certified gap {best.gap_:.1e}")

# %%
# Three gradient-flow runs from small random starts, their normalized margin against the optimum.
fig, ax = plt.subplots(figsize=(6, 3.5))
for seed in range(3):
    _, steps, margins = gradient_flow(X, y, width=50, steps=4000, seed=seed)
    print(f"run {seed}: final margin / optimum = {margins[-1] / best.margin_:.4f}")
    ax.plot(steps[1:], margins[1:] / best.margin_, lw=1, label="gradient flow" if seed == 0 else None)
ax.axhline(1, color="k", ls="--", label="convex max-margin optimum (certified)")
ax.set_xscale("log")
ax.set_ylim(0, 1.1)
ax.set_xlabel("gradient step")
ax.set_ylabel("normalized margin / optimum")
ax.legend(loc="lower right")
fig.tight_layout()

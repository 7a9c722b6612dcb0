"""
A certified fit and its network
===============================

Fit a gated two-layer ReLU network by its convex program, read off the certificate, and check it
the independent way: the recovered :class:`torch.nn.Module` evaluates the *non-convex* training
objective, which must equal the convex optimum.
"""
import matplotlib.pyplot as plt
import numpy as np
import torch

from convexgan import ConvexReLU

rng = np.random.default_rng(0)
x = np.sort(rng.uniform(-2, 2, 300))
X = np.stack([x, np.ones_like(x)], 1)  # a constant feature lets the neurons have biases
y = np.sin(2 * x) + 0.1 * rng.standard_normal(x.size)

model = ConvexReLU(lam=1e-3, n_patterns=200, activation="gated", tol=1e-8, seed=0).fit(X, y)
print(f"optimum {model.objective_:.8f}, relative duality gap {model.gap_:.1e}, {model.n_neurons_} neurons")
print(f"the recovered network's own objective: {model.network_objective(X, y):.8f}")

# %%
# The network is an ordinary module: evaluate it anywhere. A gated ReLU neuron
# ``(x^T w) 1[x^T g >= 0]`` switches at its gate's hyperplane, so the fit is piecewise linear with
# steps there; ``activation="relu"`` solves the exact ReLU program (continuous, slower).
net = model.to_torch()
grid = np.linspace(-2.5, 2.5, 400)
with torch.no_grad():
    curve = net(torch.as_tensor(np.stack([grid, np.ones_like(grid)], 1))).squeeze(1).numpy()

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.scatter(x, y, s=6, color="0.6", label="data")
ax.plot(grid, curve, color="tab:blue", lw=2, label=f"certified optimum ({model.n_neurons_} neurons)")
ax.set_xlabel("x")
ax.set_ylabel("y")
ax.legend()
fig.tight_layout()

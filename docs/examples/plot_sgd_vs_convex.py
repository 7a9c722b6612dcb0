"""
SGD against the certified optimum
=================================

The same objective, a two-layer ReLU network with weight decay, trained two ways: SGD from random
starts, and the exact convex program over every activation pattern of the data, whose optimum is
the global one over all widths. :func:`convexgan.certify_network` then bounds how far each SGD
network is from that optimum, from the network alone.
"""
import matplotlib.pyplot as plt
import numpy as np
import torch

from convexgan import ConvexReLU, TwoLayerReLU, certify_network, enumerate_patterns

rng = np.random.default_rng(0)
x = np.sort(rng.uniform(-2, 2, 12))
X = np.stack([x, np.ones_like(x)], 1)
y = np.exp(-2 * x ** 2) - 0.3 * x + 0.05 * rng.standard_normal(x.size)
lam = 1e-2

_, gates = enumerate_patterns(X)  # every pattern of X: the global optimum
convex = ConvexReLU(lam=lam, gates=gates, activation="relu", tol=1e-7, max_iter=100_000).fit(X, y)
print(f"convex optimum {convex.objective_:.6f}, certified gap {convex.gap_:.1e}")

# %%
# SGD on the same objective, from five random starts.
Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
fig, ax = plt.subplots(figsize=(6, 3.5))
for start in range(5):
    torch.manual_seed(start)
    net = TwoLayerReLU(d=2, m=20, c=1).double()  # 20 hidden neurons, PyTorch's default initialization
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    curve = []
    for step in range(2000):
        rows = torch.randperm(len(X))[:4]
        optimizer.zero_grad()
        (0.5 * ((net(Xt[rows])[:, 0] - yt[rows]) ** 2).mean() + lam * net.weight_penalty()).backward()
        optimizer.step()
        with torch.no_grad():
            curve.append(float(0.5 * ((net(Xt)[:, 0] - yt) ** 2).mean() + lam * net.weight_penalty()))
    cert = certify_network(net.requires_grad_(False), X, y, lam)
    print(f"SGD start {start}: objective {cert.objective:.6f} ({cert.objective / convex.objective_ - 1:.1%} above the optimum); "
          f"certify_network alone proves a lower bound {cert.lower_bound:.6f} (gap {cert.gap:.1%})")
    ax.plot(np.arange(1, len(curve) + 1), curve, lw=1, label="SGD" if start == 0 else None)
ax.axhline(convex.objective_, color="k", ls="--", label="convex optimum (certified)")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("SGD step")
ax.set_ylabel("training objective")
ax.legend()
fig.tight_layout()

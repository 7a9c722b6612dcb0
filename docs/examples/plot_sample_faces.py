"""
Sampling faces from a trained generator
=======================================

Train the progressive convex-GAN generator on the 100 LFW faces that ship with scikit-image
(two stages: 8 and 16 pixels), each stage closed form or a certified convex fit, then draw
samples from it. The same code trains on CelebA with ``convexgan-train-celeba``.
"""
import matplotlib.pyplot as plt
import torch
from torchvision.utils import make_grid

from convexgan.data import face_dataset
from layerwise import ProgressiveTrainer

faces = face_dataset("lfw", resolution=16, holdout=0.1)
print(faces.description)

trainer = ProgressiveTrainer(layers=2, n_patches=3000, seed=0)
generator = trainer.fit(faces.train)

# %%
# Sixteen samples (left) beside the ten held-out real faces (right).
samples = generator.sample(16, seed=0)  # (16, C, 16, 16) in [0, 1]
real = torch.as_tensor(faces.test[:10]).permute(0, 3, 1, 2) / 255.0  # uint8 (N, H, W, C) -> (N, C, H, W)
fig, axes = plt.subplots(1, 2, figsize=(8, 4))
for ax, images, title in ((axes[0], samples, "samples"), (axes[1], real, "held-out real faces")):
    ax.imshow(make_grid(images, nrow=4, padding=1, pad_value=1).permute(1, 2, 0).numpy())
    ax.set_title(title)
    ax.axis("off")
fig.tight_layout()

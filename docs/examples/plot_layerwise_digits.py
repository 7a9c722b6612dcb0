"""
A layerwise classifier on digits
================================

A VGG-style CNN trained one block at a time, each block (a gated-ReLU 3 x 3 convolution with a
pooled linear head) a convex program certified by its duality gap, on scikit-learn's embedded
8 x 8 digits. The trained stack is an ordinary :class:`torch.nn.Sequential`.
"""
import matplotlib.pyplot as plt

from convexgan.data import labelled_images
from layerwise import LayerwiseConvexClassifier

data = labelled_images("digits", seed=0)
clf = LayerwiseConvexClassifier(widths=(16, 32), lam=1e-2, seed=0).fit(data.X_train, data.y_train)
for k, stage in enumerate(clf.stages_, 1):
    print(f"block {k}: {stage['neurons']} neurons, certified gap {stage['certificate']['gap']:.1e}, "
          f"train accuracy {stage['train_accuracy']:.3f}")
print(f"test accuracy {clf.score(data.X_test, data.y_test):.4f}")
print(clf.to_torch())

# %%
# Test digits with the stack's predictions.
predicted = clf.predict(data.X_test[:16])
fig, axes = plt.subplots(2, 8, figsize=(8, 2.4))
for ax, image, label in zip(axes.flat, data.X_test[:16], predicted):
    ax.imshow(image[..., 0], cmap="gray_r")
    ax.set_title(f"{label}", fontsize=9)
    ax.axis("off")
fig.tight_layout()

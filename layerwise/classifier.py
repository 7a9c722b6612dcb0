"""Layerwise convex classifier: a VGG-style CNN trained one block at a time (Belilovsky et al.
2019), every block a convex program with a certificate (``convexgan.convolutional``).

Stage k standardizes its input per channel, whitens its 3 x 3 patches (``whiten_eps``; see
``convexgan.convolutional.patch_whitening``), then fits a gated-ReLU 3 x 3 convolution together with
an auxiliary head (2 x 2 average pooling and a linear layer) by solving the convex program of
``PooledConvProgram`` over ``n_patterns[k]`` sampled convolutional gates. The block is frozen,
its ``widths[k]`` strongest neurons (largest singular values) feed the next stage, after 2 x 2
average pooling where ``downsample[k]``. The last stage keeps all its neurons and its head is the
classifier. ``to_torch()`` gives the stack as an ordinary ``nn.Sequential`` (inside a
``MirrorAverage`` with ``mirror_tta``: the mean scores of each image and its mirror image).

With ``distributed=True`` under a ``torch.distributed`` process group (``torchrun``), every rank
fits on its own images and all get the classifier of all of them: the statistics (channel
means and deviations, the patch whitening) and the solver's sums are all-reduced, the gates
come from rank 0's first images, and only rank 0 writes the checkpoint.
"""
import copy
import logging
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
from torch import nn

from convexgan import losses, solvers
from convexgan.checkpoints import load_state, save_state
from convexgan.distributed import RowShard, agree, gather_objects, is_distributed, labels_of_all_ranks
from convexgan.convolutional import (ConvBlock, PooledConvProgram, patch_whitening, pooled_features, recover_block,
                                     whiten)
from convexgan.patterns import conv_patterns
from convexgan.penalties import NuclearNorm
from convexgan.validation import as_images, check_positive, check_positive_int

log = logging.getLogger(__name__)


class Standardize(nn.Module):
    """``(x - mean) / std`` per channel, with fixed statistics (buffers)."""

    def __init__(self, channels):
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))

    @classmethod
    def fitted(cls, x, shard=None):
        """The layer with the per-channel mean and std (floored at 1e-6) of images x (N, C, H, W)
        (of every rank's images, with ``shard``, a ``RowShard``)."""
        shard = shard or RowShard(len(x), sharded=False)
        count = shard.total * x.shape[2] * x.shape[3]
        layer = cls(x.shape[1])
        layer.mean.copy_(shard.sum(x.double().sum((0, 2, 3), keepdim=True)) / count)
        spread = shard.sum((x.double() - layer.mean.double()).square().sum((0, 2, 3), keepdim=True)) / (count - 1)
        layer.std.copy_(spread.sqrt().clamp_min(1e-6))
        return layer

    def forward(self, x):
        return (x - self.mean) / self.std


class MirrorAverage(nn.Module):
    """Test-time augmentation: the mean of ``network``'s outputs for images (N, C, H, W) and for
    their left-right mirror images."""

    def __init__(self, network):
        if not isinstance(network, nn.Module):
            raise TypeError(f"MirrorAverage wraps a torch.nn.Module, got {type(network).__name__}.")
        super().__init__()
        self.network = network

    def forward(self, x):
        return (self.network(x) + self.network(x.flip(-1))) / 2


class LayerwiseConvexClassifier(ClassifierMixin, BaseEstimator):
    """VGG-style classifier trained block by block, each block a certified convex program.

    Parameters
    ----------
    widths : sequence of int
        Neurons each block passes on (its output channels); one value per block.
    n_patterns : sequence of int or None
        Sampled gates per block (default: ``widths``).
    downsample : sequence of bool or None
        2 x 2 average pooling after each block but the last (default: all True); skipped for
        images smaller than 2 x 2.
    lam : float > 0
        Weight decay.
    tol : float
        Relative duality gap at which each block's solve stops.
    max_iter : int
        FISTA iterations per block at most, on its whole program and in each subspace round
        (``solvers.solve_gated_subspace``): a block stops once its float64 gap is <= tol; a block
        stopped by max_iter reports its larger gap.
    whiten_eps : float or None
        ZCA regularizer of the patch whitening, relative to the mean eigenvalue (None: no
        whitening; the weight decay is then on the raw filters, and FISTA is far slower on
        natural images).
    seed : int
        Seed of the sampled gates.
    device : str
        Where the solves run ("cpu" or "cuda").
    dtype : {"float32", "float64"}
        Precision of the solves (float32 certificates are confirmed in float64).
    distributed : bool
        Under a ``torch.distributed`` process group, ``fit`` on every rank with its own images
        (and test images) trains on all of them; see the module's docstring.
    mirror_tta : bool
        Score each image by the mean of the class scores of it and of its left-right mirror image
        (test-time augmentation; training is unchanged). For natural images, whose classes a
        mirror keeps: CIFAR-10 blocks 32, 64 gain 1.85 points on 2,000 held-out training images
        (BENCHMARKS.md); digits and text do not keep their class.

    Attributes
    ----------
    classes_ : array (K,)
    network_ : torch.nn.Sequential or MirrorAverage
        The stack (float32), images (N, C, H, W) in [0, 1] to (N, K) class scores (with
        ``mirror_tta``, inside a ``MirrorAverage``).
    stages_ : list of dict
        Per stage: seconds, neurons, kept, train (and test) accuracy, certificate.
    n_iter_ : array (stages,)
        FISTA iterations per stage (on the whole program and in the subspace rounds).
    n_features_in_ : int
        Channels of the input (features of a table).

    Input: images in one layout per type (``convexgan.validation.as_images``): uint8
    (N, H, W, C), float (N, C, H, W), or a table (N, D) of features, read as D channels on one
    pixel (every block is then a gated ReLU layer, and pooling is skipped).
    """

    def __init__(self, widths=(64, 64), n_patterns=None, downsample=None, lam=1e-2, tol=1e-3, max_iter=2000,
                 whiten_eps=1e-3, seed=0, device="cpu", dtype="float32", distributed=False, mirror_tta=False):
        self.widths = widths
        self.n_patterns = n_patterns
        self.downsample = downsample
        self.lam = lam
        self.tol = tol
        self.max_iter = max_iter
        self.whiten_eps = whiten_eps
        self.seed = seed
        self.device = device
        self.dtype = dtype
        self.distributed = distributed
        self.mirror_tta = mirror_tta

    def _config(self):
        widths = [check_positive_int(w, "widths") for w in self.widths]
        if not widths:
            raise ValueError("widths must name at least one stage.")
        patterns = widths if self.n_patterns is None else [check_positive_int(p, "n_patterns") for p in self.n_patterns]
        downsample = [True] * len(widths) if self.downsample is None else [bool(d) for d in self.downsample]
        if len(patterns) != len(widths) or len(downsample) != len(widths):
            raise ValueError(f"widths, n_patterns and downsample need one value per stage ({len(widths)}).")
        check_positive(self.lam, "lam")
        check_positive(self.tol, "tol")
        if self.whiten_eps is not None:
            check_positive(self.whiten_eps, "whiten_eps")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}.")
        if not isinstance(self.mirror_tta, (bool, np.bool_)):
            raise ValueError(f"mirror_tta must be True or False, got {self.mirror_tta!r}.")
        return widths, patterns, downsample

    def fit(self, X, y, X_test=None, y_test=None, checkpoint=None, on_stage=None):
        """Train the stack block by block, each block a certified convex program.

        Parameters
        ----------
        X : array-like
            Images: uint8 (N, H, W, C), float (N, C, H, W) in [0, 1], or a table (N, D).
        y : array-like of shape (N,)
            Labels of any sortable type, at least two classes.
        X_test, y_test : array-like, optional
            Held-out images and labels: every stage's test accuracy is recorded too.
        checkpoint : str or path-like, optional
            A file written atomically after every stage; a rerun with the same data and
            parameters resumes from it.
        on_stage : callable, optional
            Called with each stage's record (``stages_[k]``) after the stage.

        Returns
        -------
        LayerwiseConvexClassifier
            The fitted classifier.
        """
        widths, patterns, downsample = self._config()
        sharded = bool(self.distributed) and is_distributed()
        with agree("checking its images") if sharded else nullcontext():
            x = self._images(X, reset=True)
            y = self._labels(y, len(x))
            x_test = None if X_test is None else self._images(X_test, reset=False, name="X_test")
            if x_test is not None and x_test.shape[1:] != x.shape[1:]:
                raise ValueError(f"X_test images {tuple(x_test.shape[1:])} differ from X's {tuple(x.shape[1:])}.")
            y_test = None if X_test is None else self._labels(y_test, len(x_test), "y_test")
        shard = RowShard(len(x), sharded)
        test_shard = None if x_test is None else RowShard(len(x_test), sharded)
        self.classes_ = labels_of_all_ranks(y) if sharded else np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(f"y has 1 class ({self.classes_[0]!r}): a classifier needs at least two.")
        Y = torch.from_numpy(np.eye(len(self.classes_))[np.searchsorted(self.classes_, y)])
        layers, self.stages_ = [], []
        fingerprint = self._fingerprint(x, y, sharded)
        state = shard.on_first_rank(self._load, checkpoint, fingerprint)
        if state is not None:
            layers, self.stages_ = state["layers"], state["stages"]
            log.info("resuming after stage %d of %d from %s", len(self.stages_), len(widths), checkpoint)
        inputs = self._forward(nn.Sequential(*layers), x)  # the frozen stages' output, carried forward
        for k in range(len(self.stages_), len(widths)):
            start = time.perf_counter()
            last = k == len(widths) - 1
            standardize = Standardize.fitted(inputs, shard)
            block, head, bias, cert, n_iter = self._fit_block(standardize(inputs), Y, patterns[k], k, shard)
            kept = block.weight.shape[0] if last else min(widths[k], block.weight.shape[0])
            stage_net = nn.Sequential(standardize, block, nn.AdaptiveAvgPool2d(2), nn.Flatten(), _linear(head, bias))
            scorer = self._scorer(layers + [stage_net])
            record = {"stage": k + 1, "neurons": int(block.weight.shape[0]), "kept": int(kept),
                      "certificate": {"primal": cert.primal, "dual": cert.dual, "gap": cert.gap},
                      "iterations": n_iter,
                      "train_accuracy": self._accuracy(scorer, x, y, shard)}
            if x_test is not None:
                record["test_accuracy"] = self._accuracy(scorer, x_test, y_test, test_shard)
            if last:
                layers += list(stage_net)
            else:
                pool = downsample[k] and min(inputs.shape[2:]) >= 2
                added = [standardize, _truncate(block, kept)] + ([nn.AvgPool2d(2)] if pool else [])
                layers += added
                inputs = self._forward(nn.Sequential(*added), inputs)
            record["seconds"] = time.perf_counter() - start
            self.stages_.append(record)
            log.info("stage %d: %d neurons (%d kept), gap %.2g, train %.4f%s, %.1f s", k + 1, record["neurons"], kept,
                     cert.gap, record["train_accuracy"],
                     f", test {record['test_accuracy']:.4f}" if "test_accuracy" in record else "", record["seconds"])
            if checkpoint is not None:
                with agree("writing the checkpoint") if sharded else nullcontext():
                    if shard.first:
                        self._save(checkpoint, layers, fingerprint)
            if on_stage is not None and shard.first:
                on_stage(record)
        self.network_ = self._scorer(layers).float().eval().requires_grad_(False)
        self.n_iter_ = np.array([record["iterations"] for record in self.stages_])
        return self

    def _fit_block(self, inputs, Y, n_patterns, k, shard):
        """The convex program of one block on standardized inputs (N, C, H, W) (this rank's, at
        rows ``shard``)."""
        dtype = torch.float64 if self.dtype == "float64" else torch.float32
        # duplicates checked on the first images (rank 0's)
        gates = shard.on_first_rank(_gates, inputs[:128], n_patterns, self.seed + k)
        gates = gates.to(inputs.dtype)
        features = pooled_features(inputs, gates)
        whitening = None
        if self.whiten_eps is not None:
            whitening = patch_whitening(features, self.whiten_eps, across_ranks=shard.sharded, dtype=dtype)
            features = whiten(features, whitening)
        loss = losses.CrossEntropyLoss()
        program = PooledConvProgram(features.to(self.device, dtype), Y.to(self.device, dtype),
                                    loss.sharded(shard.total) if shard.sharded else loss, NuclearNorm(self.lam))
        W, b = program.zeros()
        W, b, cert, n_iter = solvers.solve_gated_subspace(program, W, b, self.tol, self.max_iter)
        if not cert.gap <= self.tol:
            warnings.warn(f"block {k + 1} stopped after max_iter={self.max_iter} with relative gap {cert.gap:.2g} above "
                          f"tol={self.tol:g}: it keeps that certificate; raise max_iter for a tighter one.",
                          ConvergenceWarning, stacklevel=4)
        block, head, _ = recover_block(W.double().cpu(), gates.double(), inputs.shape[1],
                                       None if whitening is None else whitening.double(), precision=dtype)
        return block.float(), head.float(), b.float().cpu(), cert, n_iter

    def _scorer(self, layers):
        """The network of ``layers`` that scores images: their stack, mirror-averaged with ``mirror_tta``."""
        stack = nn.Sequential(*layers)
        return MirrorAverage(stack) if self.mirror_tta else stack

    @staticmethod
    @torch.no_grad()
    def _forward(network, x, batch=128):
        return torch.cat([network(chunk) for chunk in x.split(batch)])

    def _accuracy(self, network, x, y, shard):
        """The share of correct labels over the images of every rank (this rank's: x, y)."""
        scores = self._forward(network.float().eval(), x)
        correct = torch.tensor(float((self.classes_[scores.argmax(1).numpy()] == np.asarray(y)).sum()))
        return float(shard.sum(correct)) / shard.total

    def _fingerprint(self, x, y, sharded):
        """What a checkpoint must have been trained on: the parameters and the data (every rank's)."""
        data = {"shape": tuple(x.shape), "sum": float(x.double().sum()), "labels": np.asarray(y).tolist()}
        params = {k: v for k, v in self.get_params().items() if k != "distributed"}
        return {"params": params, "data": gather_objects(data) if sharded else [data]}

    def _save(self, path, layers, fingerprint):
        """The layers as a spec and a state_dict (loadable with ``weights_only=True``)."""
        save_state(path, {"spec": [_layer_spec(layer) for layer in layers],
                          "state_dict": nn.Sequential(*layers).state_dict(), "stages": self.stages_,
                          "fingerprint": fingerprint})

    def _load(self, path, fingerprint):
        if path is None or not Path(path).is_file():
            return None
        fix = "delete it to start again, or pass another checkpoint."
        state = load_state(path, fix)
        if not isinstance(state, dict) or "spec" not in state:
            raise ValueError(f"checkpoint {path} is no layerwise classifier checkpoint: {fix}")
        if state["fingerprint"] != fingerprint:
            raise ValueError(f"checkpoint {path} belongs to other data or parameters: {fix}")
        layers = nn.Sequential(*[_layer_from_spec(spec) for spec in state["spec"]])
        layers.load_state_dict(state["state_dict"])
        return {"layers": list(layers), "stages": state["stages"]}

    def _images(self, X, reset, name="X"):
        """Images (N, C, H, W) float32 (``as_images``); ``n_features_in_`` (channels) is recorded
        (``reset``) or checked. Tables (and lists, sparse matrices...) go through scikit-learn's checks first."""
        if getattr(X, "ndim", 0) <= 2:
            X = validate_data(self, X, reset=reset, dtype=[np.float64, np.float32])
            return as_images(X, name)
        x = as_images(X, name)
        if reset:
            self.n_features_in_ = x.shape[1]
        elif x.shape[1] != self.n_features_in_:
            raise ValueError(f"{name} has {x.shape[1]} channels, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} channels as input.")
        return x

    @staticmethod
    def _labels(y, n, name="y"):
        y = column_or_1d(y, warn=True)
        if len(y) != n:
            raise ValueError(f"{name} must hold one label per image ({n}), got {len(y)}.")
        check_classification_targets(y)
        return y

    def __sklearn_is_fitted__(self):
        return hasattr(self, "network_")

    def _scores(self, X):
        """(N, K) class scores of the exported network."""
        check_is_fitted(self)
        return self._forward(self.network_, self._images(X, reset=False)).numpy()

    def decision_function(self, X):
        """The stack's class scores.

        Parameters
        ----------
        X : array-like
            Images: uint8 (N, H, W, C), float (N, C, H, W) in [0, 1], or a table (N, D).

        Returns
        -------
        ndarray of shape (N, K) or (N,)
            Class scores; for two classes the margin of the second class over the first
            (scikit-learn's convention).
        """
        scores = self._scores(X)
        return scores[:, 1] - scores[:, 0] if scores.shape[1] == 2 else scores

    def predict(self, X):
        """The class of every image.

        Parameters
        ----------
        X : array-like
            Images: uint8 (N, H, W, C), float (N, C, H, W) in [0, 1], or a table (N, D).

        Returns
        -------
        ndarray of shape (N,)
            Labels from ``classes_``.
        """
        scores = self._scores(X)  # before classes_: an unfitted model raises NotFittedError
        return self.classes_[scores.argmax(1)]

    def to_torch(self):
        """The trained stack as an ordinary module.

        Returns
        -------
        torch.nn.Sequential or MirrorAverage
            A copy (float32) mapping (N, C, H, W) images in [0, 1] to (N, K) class scores (with
            ``mirror_tta``, the ``nn.Sequential`` inside a ``MirrorAverage``).
        """
        check_is_fitted(self)
        return copy.deepcopy(self.network_)


def _gates(images, n_patterns, seed):
    """Convolutional gates (P, C, 3, 3) whose patterns on ``images`` are distinct."""
    return conv_patterns(images.double(), n_patterns, seed=seed)[1]


def _layer_spec(layer):
    """What ``_layer_from_spec`` needs to rebuild ``layer`` (a list of str and int)."""
    if isinstance(layer, Standardize):
        return ["standardize", layer.mean.shape[1]]
    if isinstance(layer, ConvBlock):
        return ["conv", layer.weight.shape[1], layer.weight.shape[0], layer.gates.shape[0]]
    if isinstance(layer, nn.Linear):
        return ["linear", layer.in_features, layer.out_features]
    return [{nn.AvgPool2d: "pool", nn.AdaptiveAvgPool2d: "head_pool", nn.Flatten: "flatten"}[type(layer)]]


def _layer_from_spec(spec):
    kind, *sizes = spec
    build = {"standardize": Standardize, "conv": ConvBlock, "linear": nn.Linear, "pool": lambda: nn.AvgPool2d(2),
             "head_pool": lambda: nn.AdaptiveAvgPool2d(2), "flatten": nn.Flatten}
    if kind not in build:
        raise ValueError(f"unknown layer {kind!r} in a checkpoint's spec: it was written by another version.")
    return build[kind](*sizes)


def _linear(weight, bias):
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


def _truncate(block, kept):
    """The block with its first ``kept`` neurons (the strongest: recover_block sorts them)."""
    small = ConvBlock(block.weight.shape[1], kept, block.gates.shape[0])
    with torch.no_grad():
        small.weight.copy_(block.weight[:kept])
        small.gates.copy_(block.gates)
        small.pattern.copy_(block.pattern[:kept])
    return small

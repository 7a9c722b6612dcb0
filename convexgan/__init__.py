"""convexgan: neural networks trained by convex optimization, with a certificate.

The core: activation patterns of hyperplane arrangements, convex two-layer ReLU and gated-ReLU
programs (squared, logistic and cross-entropy losses; scalar and vector outputs), their solvers
(a semismooth Newton augmented Lagrangian, ``ssnal``, and FISTA) and duality-gap certificates, regularization paths, and recovery into ``torch.nn`` modules; the closed-form convex-GAN generator (``svt``), also from a
streamed Gram matrix (``GramAccumulator``, ``svt_factor``), a convex fit of a two-layer ReLU
generator to it (``fit_relu_generator``), sample-quality metrics (``ms_swd``), and the optimal
set: any two-layer ReLU network certified against the global optimum (``certify_network``) and
pruned to at most n neurons (``prune``), and whether a fitted model's optimum is unique
(``optimal_set``, ``is_unique``).
"""
__version__ = "0.2.0"

from . import admm, losses, solvers, ssnal
from .losses import CrossEntropyLoss, LogisticLoss, SquaredLoss
from .models import ConvexReLU, ConvexReLUClassifier
from .batch_norm import ConvexBatchNormReLU
from .polynomial import ConvexQuadraticNet
from .three_layer import ConvexThreeLayer
from .networks import TwoLayerGatedReLU, TwoLayerReLU
from .optimal_set import NetworkCertificate, OptimalSet, certify_network, is_unique, optimal_set, prune
from .path import RegularizationPath, plot_regularization_path, regularization_path
from .patterns import conv_patterns, enumerate_patterns, sample_patterns
from .penalties import GroupL2, NuclearNorm
from .generator import GeneratorFit, fit_relu_generator
from .max_margin import MaxMargin, gradient_flow, max_margin, normalized_margin
from .metrics import ms_swd, nearest_neighbour_distance, sliced_wasserstein
from .svt import GramAccumulator, svt, svt_factor, svt_factors

__all__ = [
    "ConvexBatchNormReLU", "ConvexQuadraticNet", "ConvexReLU", "ConvexReLUClassifier", "ConvexThreeLayer", "CrossEntropyLoss", "GroupL2", "LogisticLoss",
    "NuclearNorm", "RegularizationPath", "SquaredLoss", "TwoLayerGatedReLU", "TwoLayerReLU",
    "conv_patterns", "enumerate_patterns", "plot_regularization_path", "regularization_path",
    "sample_patterns", "svt", "svt_factor", "svt_factors", "GramAccumulator", "GeneratorFit",
    "fit_relu_generator", "ms_swd", "nearest_neighbour_distance", "sliced_wasserstein",
    "MaxMargin", "gradient_flow", "max_margin", "normalized_margin",
    "NetworkCertificate", "OptimalSet", "certify_network", "is_unique", "optimal_set", "prune",
]

"""Trainers that stack convex stages: progressive generators and layerwise classifiers."""
from .classifier import LayerwiseConvexClassifier
from .progressive import ProgressiveGenerator, ProgressiveTrainer, load_checkpoint

__all__ = ["LayerwiseConvexClassifier", "ProgressiveGenerator", "ProgressiveTrainer", "load_checkpoint"]

"""Trainers that stack convex stages: progressive generators and layerwise classifiers."""

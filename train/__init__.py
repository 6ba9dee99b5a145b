"""Training: dataset building, synthesis, box-aware augmentation, the VGG19 two-head model."""

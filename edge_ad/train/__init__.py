"""Training: the generic trainer loop, the paper optimisers and schedules, run directories."""

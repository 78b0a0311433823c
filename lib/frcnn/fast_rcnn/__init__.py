"""Fast R-CNN parts: box transforms, losses, training and testing."""

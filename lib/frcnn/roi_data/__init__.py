"""roidb preparation, image blobs and the training data loader."""

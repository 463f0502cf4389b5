"""Training data: preprocessing, label transforms, augmentation, rebalancing and patch sampling."""

"""Training AVISM with Accelerate: AVISeg data, augmentation, and the training and evaluation scripts."""

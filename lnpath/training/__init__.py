"""Training: fine-tune the glomerulus U-Net, train or calibrate lesion models from labels."""

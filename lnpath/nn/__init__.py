"""Neural-network building blocks (PyTorch); imported only when a network is needed."""

from lnpath.nn.unet import UNet, UNetConfig

__all__ = ["UNet", "UNetConfig"]

"""A Registry v2 stand-in and small test images, for the udocker layer's tests."""

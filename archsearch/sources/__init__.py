"""Where source networks come from: the built-in backbones, a user's file, torchvision and timm."""

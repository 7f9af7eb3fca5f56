"""fxq: int8 quantization of PyTorch models by rewriting their torch.fx graphs."""

"""nn: a small autograd library with PyTorch's names.

    import nn
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    loss = nn.functional.cross_entropy(model(nn.Tensor(x)), y)
    loss.backward()
    nn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9).step()

Data may be NumPy or CuPy arrays. `nn.parallel` holds data- and tensor-parallel training.
"""
from . import autograd, functional, init, optim, transformer
from .autograd import Function, is_grad_enabled, no_grad, queue_callback
from .modules import GELU, Dropout, LayerNorm, Linear, Module, Parameter, ReLU, Sequential, Sigmoid, Tanh
from .random import manual_seed
from .tensor import Tensor, array_module, concatenate, split, stack
from .transformer import GPT, CausalSelfAttention, Embedding, GPTConfig, TransformerBlock

__all__ = ["Tensor", "Parameter", "Module", "Linear", "Sequential", "ReLU", "Tanh", "Sigmoid", "GELU",
           "LayerNorm", "Dropout", "no_grad", "is_grad_enabled", "Function", "queue_callback",
           "manual_seed", "array_module", "concatenate", "split", "stack", "functional", "init",
           "optim", "autograd", "transformer", "Embedding", "CausalSelfAttention", "TransformerBlock",
           "GPT", "GPTConfig"]

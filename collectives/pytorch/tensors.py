"""Torch tensors as engine buffers: zero-copy views where the memory allows, working
copies (written back at the end) where it does not, and PyTorch's reduce ops by name.

Data movement (broadcast, gathers, all-to-all, send/recv) sees every tensor as its raw
bytes, so every torch dtype moves, bool and complex included. Reductions see the
tensor's own dtype; bfloat16 is reduced in a float32 working copy and rounded once when
the result is copied back.
"""
import torch
import torch.distributed as dist

_OPS = {dist.ReduceOp.SUM: "sum", dist.ReduceOp.AVG: "avg", dist.ReduceOp.PRODUCT: "prod",
        dist.ReduceOp.MIN: "min", dist.ReduceOp.MAX: "max"}


def reduce_op(op) -> tuple:
    """(engine op name, pre-multiplication factor or None) for a torch ReduceOp.

    PREMUL_SUM becomes "sum" over inputs multiplied by the op's factor first; the
    bitwise ops raise ValueError (the engine has no bitwise reduction)."""
    if op == dist.ReduceOp.PREMUL_SUM:
        return "sum", op.factor
    for torch_op, name in _OPS.items():
        if op == torch_op:
            return name, None
    raise ValueError(f"backend 'collectives' does not implement ReduceOp {op.op.name}: use SUM, AVG, "
                     f"PRODUCT, MIN, MAX or PREMUL_SUM")


class Staged:
    """A tensor as the engine sees it: `array` is a 1-D NumPy (CuPy for CUDA) view of
    the tensor's memory, or of a contiguous working copy when the tensor is not
    contiguous, is bfloat16 under a reduction (float32 copy) or is pre-multiplied.

    reduced: the engine reduces it (typed view; otherwise raw bytes).
    factor:  multiply the working copy by this first (PREMUL_SUM).
    fill:    the working copy starts with the tensor's values (False for pure outputs).
    Call `finish()` once the engine is done: it copies a working copy back (rounding
    float32 to bfloat16 there, once).
    """

    def __init__(self, tensor, *, reduced=False, factor=None, fill=True):
        self.tensor = tensor.detach()
        dtype = self.tensor.dtype
        widen = reduced and dtype == torch.bfloat16
        self.copied = widen or factor is not None or not self.tensor.is_contiguous()
        work = self.tensor
        if self.copied:
            work = torch.empty(self.tensor.shape, dtype=torch.float32 if widen else dtype,
                               device=self.tensor.device)
            if fill:
                work.copy_(self.tensor)
            if factor is not None:
                work.mul_(factor)
        self.array = array_view(work, typed=reduced)
        self.work = work

    def finish(self):
        """Copy the working copy back into the tensor (nothing to do for a direct view)."""
        if self.copied:
            self.tensor.copy_(self.work)


def array_view(tensor, typed=True):
    """1-D NumPy (CPU) or CuPy (CUDA, through DLPack) view of a contiguous tensor's
    memory: in its own dtype when `typed`, else as uint8 bytes. No copy."""
    flat = tensor.reshape(-1)
    if not typed:
        flat = flat.view(torch.uint8)
    if flat.device.type == "cuda":
        import cupy
        return cupy.from_dlpack(flat)
    try:
        return flat.numpy()
    except TypeError:
        raise TypeError(f"backend 'collectives' cannot reduce {tensor.dtype}: reductions take "
                        "the engine's dtypes and bfloat16 (data movement takes any dtype)") from None


def as_tensor(array):
    """The torch tensor sharing `array`'s memory (NumPy or CuPy)."""
    if type(array).__module__.startswith("numpy"):
        return torch.from_numpy(array)
    return torch.from_dlpack(array)


def joined_bytes(tensors):
    """One contiguous uint8 tensor holding the tensors' bytes one after another (a copy)."""
    return torch.cat([t.detach().reshape(-1).view(torch.uint8) for t in tensors])


def split_bytes_into(array, tensors):
    """Copy consecutive byte ranges of the flat byte array `array` into `tensors`, each
    receiving as many bytes as it holds."""
    source = as_tensor(array)
    offset = 0
    for t in tensors:
        size = t.numel() * t.element_size()
        t.detach().copy_(source[offset:offset + size].view(t.dtype).view(t.shape))
        offset += size


def byte_size(tensor) -> int:
    """Bytes of a tensor's elements."""
    return tensor.numel() * tensor.element_size()


def synchronize_device(tensors):
    """Make prior GPU work on CUDA tensors complete before another thread reads them."""
    for t in tensors:
        if t.device.type == "cuda":
            torch.cuda.current_stream(t.device).synchronize()
            return

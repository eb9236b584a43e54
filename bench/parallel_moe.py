"""The expert-parallel row of bench.parallel: one MixtureOfExperts layer (--dim -> --hidden
-> --dim experts, 2 per rank) on batch/n tokens per rank, and the bytes each rank sends
in one training step, counted at the transport, next to the formula:

  2 alltoallv forward (tokens out to their experts, results back) and their 2 conjugates
  backward: 2 * (S + R) * dim * 4, S = this rank's tokens routed to other ranks, R = the
  tokens other ranks routed here (from the layer's routing of that step);
  the ring all-gather of the n * E token counts: (n-1) * E * 8;
  the ring all-reduce of the replicated gate's gradients: 2(n-1)/n * 4 * gate params.
"""
import numpy as np

import nn
from collectives.observe import ByteCounter
from nn import functional as F
from nn.parallel.moe import MixtureOfExperts


def setup(comm, args):
    """(layer, counter, step) for the expert-parallel layout over `comm`."""
    experts = 2 * comm.size
    layer = MixtureOfExperts(args.dim, args.hidden, experts, comm=comm, algorithm="ring")
    counter = ByteCounter()
    comm.add_observer(counter)
    optimizer = nn.optim.SGD(layer.parameters(), lr=1e-3)
    rng = np.random.default_rng(comm.rank)
    x = rng.standard_normal((args.batch // comm.size, args.dim)).astype(np.float32)
    target = nn.Tensor(rng.standard_normal(x.shape).astype(np.float32))

    def step():
        optimizer.zero_grad()
        F.mse_loss(layer(nn.Tensor(x, requires_grad=True)), target).backward()
        for p in layer.replicated_parameters():
            p.grad = comm.allreduce(np.ascontiguousarray(p.grad), algorithm="ring")
        optimizer.step()
    return layer, counter, step


def predicted_bytes(comm, layer, args):
    """The formula of the module docstring for the routing of the layer's last step."""
    n, rank = comm.size, comm.rank
    send, recv = layer.routing
    routed = sum(send) - send[rank] + sum(recv) - recv[rank]
    gate = sum(p.size for p in layer.replicated_parameters())
    return 2 * routed * args.dim * 4 + (n - 1) * layer.num_experts * 8 + 2 * (n - 1) / n * 4 * gate


def measure(comm, args):
    """(step function, params on this rank, bytes sent in one step, predicted bytes)."""
    layer, counter, step = setup(comm, args)
    step()
    before = counter.sent
    step()
    params = sum(p.size for p in layer.parameters())
    return step, params, counter.sent - before, predicted_bytes(comm, layer, args)

"""When bench.allreduce adds NCCL's rows: whenever every rank has its own GPU, told apart by
(host, PCI bus id), never by device ordinal (bug 5). Decided on the CPU with fake rank
layouts, through the CuPy stand-in and a fake cupy.cuda.nccl."""
import socket
import sys
import types

import pytest

from bench import allreduce
from tests import cupy_standin


class LayoutComm:
    """A rank of a fake job: every rank sees the same local GPU as this process does, and
    rank r runs on hosts[r] (what each process would gather on a real cluster)."""

    rank = 0

    def __init__(self, hosts):
        self.hosts, self.size = hosts, len(hosts)

    def allgather_object(self, obj):
        here = socket.gethostname()
        if isinstance(obj, tuple) and obj and obj[0] == here:
            return [(host,) + obj[1:] for host in self.hosts]
        return [obj] * self.size

    def broadcast_object(self, obj, root=0):
        return obj


@pytest.fixture
def nccl(monkeypatch, tmp_path):
    cp = cupy_standin.install(monkeypatch, tmp_path)
    fake = types.SimpleNamespace(get_unique_id=lambda: b"id", NcclCommunicator=lambda n, uid, rank: object(),
                                 NCCL_FLOAT32="f32", NCCL_SUM="sum")
    cp.cuda.nccl = fake
    monkeypatch.setitem(sys.modules, "cupy.cuda", cp.cuda)
    return fake


ARGS = types.SimpleNamespace(device="gpu", op="sum", datatype="float32")


def test_one_gpu_per_rank_on_two_nodes_gives_the_nccl_row(nccl):
    """Two nodes, each rank on its node's GPU 0: ordinals collide, GPUs do not."""
    said = []
    rows = allreduce.nccl_baseline(LayoutComm(["node-a", "node-b"]), ARGS, said.append)
    assert list(rows) == ["nccl"] and said == []


def test_two_ranks_on_one_gpu_say_why_there_is_no_nccl_row(nccl):
    said = []
    assert allreduce.nccl_baseline(LayoutComm(["node-a", "node-a"]), ARGS, said.append) == {}
    assert len(said) == 1 and "ranks 0 and 1 share GPU" in said[0] and "node-a" in said[0]


@pytest.mark.parametrize("layout, problem", [
    ([("a", "0000:01:00.0"), ("a", "0000:02:00.0")], None),                 # one node, two GPUs
    ([("a", "0000:01:00.0"), ("b", "0000:01:00.0")], None),                 # same bus id, two nodes
    ([("a", "0000:01:00.0")], None),
    ([("a", "X"), ("b", "X"), ("a", "Y"), ("b", "X")], "ranks 1 and 3 share GPU X on b"),
])
def test_the_layout_decision(layout, problem):
    found = allreduce.nccl_layout_problem(layout)
    assert (found is None) if problem is None else found.startswith(problem)

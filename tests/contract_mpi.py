"""The transport conformance checks over MPI: `mpirun -n 3 python -m tests.contract_mpi`.

Each check runs on a fresh duplicate of COMM_WORLD, bare and inside wrappers; a message
longer than its receive must arrive as MessageError (MPI's own exception never escapes).
"""
from mpi4py import MPI

from collectives.errors import MessageError
from collectives.trace import Recorder, TracingTransport
from collectives.transport.counting import CountingTransport
from collectives.transport.mpi import MPITransport
from tests import transport_contract as contract
from tests.mpirun import run_or_abort

WRAPS = {"mpi": lambda t: t, "counting": CountingTransport,
         "tracing": lambda t: TracingTransport(t, Recorder(t.rank))}


def on_fresh_transport(check, wrap):
    transport = MPITransport(MPI.COMM_WORLD.Dup(), timeout=30.0)
    try:
        return check(wrap(transport))
    finally:
        MPI.COMM_WORLD.Barrier()
        transport.free()


def main():
    for name, wrap in WRAPS.items():
        for check in contract.CHECKS:
            on_fresh_transport(check, wrap)
        result = on_fresh_transport(contract.check_a_longer_message_is_an_error, wrap)
        if MPI.COMM_WORLD.Get_rank() == 1:
            assert result == MessageError.__name__, (name, result)
        result = on_fresh_transport(contract.check_a_missing_message_is_an_error, wrap)
        if MPI.COMM_WORLD.Get_rank() == 0:
            assert result == "TransportTimeout", (name, result)
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(f"contract_mpi ok {MPI.COMM_WORLD.Get_size()}", flush=True)


if __name__ == "__main__":
    run_or_abort(main)

"""Every transport and wrapper passes the same conformance checks (tests/transport_contract.py).

A world is a function world(n, check) that runs check(t) on n ranks of one kind of
transport at once and returns the results in rank order. To put a new transport or
wrapper under the contract, add one entry to WORLDS.
"""
import pytest

from collectives.algorithms.hierarchical import Group
from collectives.trace import Recorder, TracingTransport
from collectives.transport import staged
from collectives.transport.counting import CountingTransport
from collectives.transport.local import run_threads
from collectives.transport.simulated import SimulatedWorld
from collectives.transport.wrapper import TransportWrapper
from tests import transport_contract as contract
from tests.test_staging import HostCopies

TIMEOUT = 10.0


def local_world(wrap=None):
    """The in-process transport, each rank's endpoint passed through wrap."""
    def world(n, check):
        return run_threads(n, check, timeout=TIMEOUT, wrap=wrap)
    return world


def group_world(n, check):
    """hierarchical.Group: the even ranks of a world of 2n, seen as a group of n (the
    odd ranks run the check as their own group at the same time)."""
    def body(t):
        return check(Group(t, range(t.rank % 2, 2 * n, 2)))
    return run_threads(2 * n, body, timeout=TIMEOUT)[0::2]


def simulated_world(n, check):
    """The simulated transport (eager sends, a deadlock is seen at once; no split)."""
    return SimulatedWorld(n).run(check)


WORLDS = {
    "local": local_world(),
    "wrapper": local_world(TransportWrapper),
    "counting": local_world(CountingTransport),
    "tracing": local_world(lambda t: TracingTransport(t, Recorder(t.rank))),
    "staged": local_world(lambda t: staged.StagedTransport(t, HostCopies())),
    "group": group_world,
    "simulated": simulated_world,
}


@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize("check", contract.CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("world", WORLDS)
def test_transport_conforms(world, check, n):
    WORLDS[world](n, check)


@pytest.mark.parametrize("check", contract.FAULT_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("world", WORLDS)
def test_transport_faults_are_errors(world, check):
    results = WORLDS[world](3, check)
    assert results[0 if check is contract.check_a_missing_message_is_an_error else 1] is not None, results


def test_wrappers_declare_the_inner_capabilities_and_group_drops_the_global_ones():
    from collectives.transport.contract import Capabilities

    def body(t):
        wrapped = [TransportWrapper(t), CountingTransport(t), TracingTransport(t, Recorder(t.rank))]
        group = Group(t, range(t.size))
        return [w.capabilities for w in wrapped], group.capabilities
    declared = Capabilities(ranks_per_node=2, pipeline_chunks=3)
    wrapped, group = run_threads(4, body, capabilities=declared, shm_bytes=0)[0]
    assert all(c == declared for c in wrapped)
    assert group == declared.replace(ranks_per_node=None)


@pytest.mark.mpi
def test_mpi_transport_conforms_under_mpirun():
    from tests.mpirun import mpirun
    result = mpirun(3, "-m", "tests.contract_mpi")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "contract_mpi ok 3" in result.stdout


def test_transports_import_nothing_above_them():
    """collectives/transport/ may use the leaf modules beside it, never the Communicator,
    the algorithms, tracing, observers or the simulation driver."""
    import ast
    import pathlib
    allowed = {"errors", "arguments", "tuning"}
    folder = pathlib.Path(__file__).resolve().parent.parent / "collectives" / "transport"
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 2:
                names = [node.module] if node.module else [alias.name for alias in node.names]
                assert set(names) <= allowed, f"{path.name} imports {names} from above transport/"
            if isinstance(node, (ast.Import, ast.ImportFrom)) and getattr(node, "level", 0) == 0:
                module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                assert not (module or "").startswith("collectives"), f"{path.name} imports {module}"

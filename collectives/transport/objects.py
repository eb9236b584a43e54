"""Object exchange over point-to-point messages, for transports without a control plane
of their own (a group of another transport's ranks, see algorithms/hierarchical.Group)."""
import pickle

import numpy as np


def allgather_object(t, obj):
    """Every rank's picklable `obj` in rank order, through t.sendrecv only.

    In round d = 1..n-1 each rank sends to rank + d and receives from rank - d: first the
    pickled length, then the bytes. Cost: 2(n-1) messages each way per rank.
    """
    n, r = t.size, t.rank
    mine = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
    result = [None] * n
    result[r] = obj
    for d in range(1, n):
        dest, source = (r + d) % n, (r - d) % n
        length = np.zeros(1, np.int64)
        t.sendrecv(np.array([mine.size], np.int64), dest, length, source)
        data = np.empty(int(length[0]), np.uint8)
        t.sendrecv(mine, dest, data, source)
        result[source] = pickle.loads(data.tobytes())
    return result

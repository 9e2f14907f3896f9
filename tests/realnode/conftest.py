"""The real node's fixtures: a control plane whose pods run in real containers (containerd, runc, a CNI
bridge and a kubelet; tests/cluster/realnode.py) from the images scripts/build-images builds.

`real_cluster` is per module: a module's tests share one node, and the node is torn down before the next
module starts its own (the host takes one real node at a time). A node that cannot start is an error, never a
skip.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import realnode  # tests/cluster, on sys.path through tests/conftest.py

from tests.conftest import Cluster, controlplane

__all__ = ["realnode"]


@pytest.fixture(scope="module")
def real_cluster() -> Iterator[Cluster]:
    with controlplane.running(real_node=True) as plane:
        yield Cluster(plane)

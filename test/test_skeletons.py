"""Skeleton registry: official joint orders, connected bone trees, left/right mirror mapping."""

import numpy as np
import pytest

from metrabs_ros.skeletons import SKELETONS, get_skeleton, mirror_permutation


@pytest.mark.parametrize('name', sorted(SKELETONS))
def test_every_registered_skeleton_is_a_tree_with_a_consistent_mirror(name):
    skeleton = SKELETONS[name]
    n = skeleton.num_joints
    assert int(name.rsplit('_', 1)[1]) == n                       # the name states the joint count
    assert len(set(skeleton.joint_names)) == n
    assert len(skeleton.edges) == n - 1                           # a tree: connected, no cycles
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i
    for a, b in skeleton.edges:
        ra, rb = root(a), root(b)
        assert ra != rb, f'cycle at {skeleton.joint_names[a]}-{skeleton.joint_names[b]}'
        parent[ra] = rb
    perm = mirror_permutation(skeleton.joint_names)
    np.testing.assert_array_equal(perm[perm], np.arange(n))      # an involution
    for i, j in enumerate(perm):
        a, b = skeleton.joint_names[i], skeleton.joint_names[j]
        assert a == b or (a[1:] == b[1:] and {a[0], b[0]} == {'l', 'r'})
    mirrored_edges = {tuple(sorted((perm[a], perm[b]))) for a, b in skeleton.edges}
    assert mirrored_edges == {tuple(sorted(e)) for e in skeleton.edges}   # bones are left/right symmetric


def test_official_orders_and_errors():
    assert get_skeleton('h36m_17').joint_names[:4] == ('pelv', 'rhip', 'rkne', 'rank')
    assert get_skeleton('mpi_inf_3dhp_17').joint_names[14] == 'pelv'
    assert get_skeleton('h36m_25').joint_names[-1] == 'pelv'
    with pytest.raises(ValueError, match='valid skeletons: coco_19, h36m_17'):
        get_skeleton('smpl_99')

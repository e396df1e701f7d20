"""Skeleton registry: official joint orders, connected bone trees, left/right mirror mapping, provenance."""

import collections

import numpy as np
import pytest

from metrabs_ros.skeletons import (
    BODY_MODEL_APPROXIMATIONS, SKELETONS, get_skeleton, is_body_model_approximation, mirror_permutation,
    skeleton_names)

# The skeleton keys of the official multi-skeleton models, in the official documentation's order (reference §7).
OFFICIAL_NAMES = (
    'smpl_24', 'kinectv2_25', 'h36m_17', 'h36m_25', 'mpi_inf_3dhp_17', 'mpi_inf_3dhp_28', 'coco_19',
    'smplx_42', 'ghum_35', 'lsp_14', 'sailvos_26', 'gpa_34', 'aspset_17', 'bml_movi_87', 'mads_19',
    'berkeley_mhad_43', 'total_capture_21', 'jta_22', 'ikea_asm_17', 'human4d_32', '3dpeople_29', 'umpm_15',
    'smpl+head_30')


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


@pytest.mark.parametrize('name', OFFICIAL_NAMES)
def test_edges_reach_every_joint_from_the_first(name):
    """Connectivity by breadth-first search (independent of the union-find above), valid indices, no loops."""
    skeleton = SKELETONS[name]
    n = skeleton.num_joints
    neighbours = collections.defaultdict(set)
    for a, b in skeleton.edges:
        assert 0 <= a < n and 0 <= b < n and a != b
        neighbours[a].add(b)
        neighbours[b].add(a)
    assert len({tuple(sorted(e)) for e in skeleton.edges}) == len(skeleton.edges)   # no duplicate bone
    seen, queue = {0}, collections.deque([0])
    while queue:
        for j in neighbours[queue.popleft()] - seen:
            seen.add(j)
            queue.append(j)
    assert seen == set(range(n)), sorted(skeleton.joint_names[j] for j in set(range(n)) - seen)


@pytest.mark.parametrize('name', OFFICIAL_NAMES)
def test_every_left_or_right_joint_has_its_counterpart(name):
    """In every official format an l*/r* name is one side of a pair (no unpaired sided joint exists)."""
    names = SKELETONS[name].joint_names
    perm = mirror_permutation(names)
    for i, joint in enumerate(names):
        if joint[0] in 'lr':
            assert perm[i] != i, f'{name}: {joint} has no counterpart'
            assert names[perm[i]] == {'l': 'r', 'r': 'l'}[joint[0]] + joint[1:]
        else:
            assert perm[i] == i


def test_all_official_names_are_registered_in_the_official_order():
    assert skeleton_names() == OFFICIAL_NAMES
    assert set(SKELETONS) == set(OFFICIAL_NAMES)
    # the seven formats registered first keep their place (other code iterates the registry)
    assert list(SKELETONS)[:7] == ['smpl_24', 'h36m_17', 'h36m_25', 'mpi_inf_3dhp_17', 'mpi_inf_3dhp_28',
                                   'coco_19', 'kinectv2_25']


def test_mirror_permutation_swaps_pairs_and_keeps_centre_and_unpaired_joints():
    perm = mirror_permutation(['lhip', 'pelv', 'rhip', 'lonely', 'rwri', 'lwri'])
    assert perm.tolist() == [2, 1, 0, 3, 5, 4]


def test_official_orders_and_errors():
    assert get_skeleton('h36m_17').joint_names[:4] == ('pelv', 'rhip', 'rkne', 'rank')
    assert get_skeleton('mpi_inf_3dhp_17').joint_names[14] == 'pelv'
    assert get_skeleton('h36m_25').joint_names[-1] == 'pelv'
    # as printed by released models (public code that reads per_skeleton_joint_names)
    assert get_skeleton('berkeley_mhad_43').joint_names[:5] == ('head', 'lhead', 'rhead', 'rback', 'backl')
    bml = get_skeleton('bml_movi_87').joint_names
    assert (bml[0], bml[67], bml[70], bml[86]) == ('backneck', 'head', 'thor', 'rfoo')
    head30 = get_skeleton('smpl+head_30').joint_names
    assert head30[0] == 'pelv' and head30[24:] == ('htop', 'lear', 'leye', 'nose', 'rear', 'reye')
    with pytest.raises(ValueError, match='valid skeletons: smpl_24, kinectv2_25, h36m_17') as info:
        get_skeleton('smpl_99')
    assert all(n in str(info.value) for n in OFFICIAL_NAMES)


def test_body_model_approximations_and_sources():
    expected = {'smpl_24', 'coco_19', 'h36m_17', 'h36m_25', 'mpi_inf_3dhp_17', 'mpi_inf_3dhp_28',
                'kinectv2_25', 'smpl+head_30', 'lsp_14'}
    assert BODY_MODEL_APPROXIMATIONS == expected
    assert isinstance(BODY_MODEL_APPROXIMATIONS, frozenset)
    for name in OFFICIAL_NAMES:
        skeleton = get_skeleton(name)
        assert skeleton.approximate_from_body_model == is_body_model_approximation(name) == (name in expected)
        assert skeleton.source and '\n' not in skeleton.source
        assert 'isarandi/PosePile' in skeleton.source                # provenance names the official code
    assert not is_body_model_approximation('bml_movi_87')
    assert not is_body_model_approximation('no_such_format')

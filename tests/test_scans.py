import pytest
import torch

from mmssm_lightning.models.scans import Scan

# 2x3 grid, row-major ids:   0 1 2
#                            3 4 5
ROW, COL = [0, 1, 2, 3, 4, 5], [0, 3, 1, 4, 2, 5]


def test_single_map_orders_on_2x3():
    g = (2, 3)
    assert Scan("forward").permutations(g).tolist() == [ROW]
    assert Scan("backward").permutations(g).tolist() == [ROW[::-1]]
    assert Scan("bidirectional").permutations(g).tolist() == [ROW, ROW[::-1]]
    assert Scan("cross").permutations(g).tolist() == [ROW, COL, ROW[::-1], COL[::-1]]


def test_two_map_orders_on_2x3():
    g = (2, 3)
    b = lambda order: [i + 6 for i in order]  # noqa: E731
    cat = Scan("cross_cat").permutations(g, num_maps=2).tolist()
    assert cat == [o + b(o) for o in (ROW, COL, ROW[::-1], COL[::-1])]
    stitch = Scan("cross_stitch").permutations(g, num_maps=2).tolist()
    assert stitch[0] == [0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11]
    assert stitch[1] == [0, 6, 3, 9, 1, 7, 4, 10, 2, 8, 5, 11]
    assert stitch[2] == [5, 11, 4, 10, 3, 9, 2, 8, 1, 7, 0, 6]
    assert stitch[3] == [5, 11, 2, 8, 4, 10, 1, 7, 3, 9, 0, 6]
    with pytest.raises(ValueError, match="cross_stitch"):
        Scan("cross_stitch").permutations(g, num_maps=1)


@pytest.mark.parametrize(
    "name", ["forward", "backward", "bidirectional", "cross", "cross_cat", "cross_stitch"]
)
def test_merge_of_scan_is_identity(name):
    maps = 2 if name == "cross_stitch" else 1
    scan = Scan(name)
    x = torch.randn(2, 6 * maps, 5)
    y = scan.scan(x, (2, 3), maps)
    assert y.shape == (2, scan.num_directions, 6 * maps, 5)
    assert torch.equal(scan.merge(y, (2, 3), maps), x)
    with pytest.raises(ValueError, match="needs"):
        scan.scan(torch.randn(1, 7, 5), (2, 3), maps)


def test_unknown_scan_names_the_key():
    with pytest.raises(ValueError, match="scan.name"):
        Scan("zigzag")

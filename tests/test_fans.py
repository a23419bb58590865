"""fans(): the true fan-in/fan-out of every PyTorch layer type's parameters."""
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

from initwise import fans, param_blocks


def test_plain_shapes():
    assert fans((30, 10)) == (10, 30)
    assert fans(torch.Size([16, 8, 3, 5])) == (8 * 15, 16 * 15)
    assert fans(torch.empty(7, 4, 2)) == (8, 14)


def test_linear():
    layer = nn.Linear(10, 50)
    assert fans(layer.weight, layer) == (10, 50)


@pytest.mark.parametrize("cls,k", [(nn.Conv1d, (3,)), (nn.Conv2d, (3, 5)), (nn.Conv3d, (3, 3, 2))])
@pytest.mark.parametrize("groups", [1, 4])
def test_conv_with_groups(cls, k, groups):
    layer = cls(8, 16, k, groups=groups)
    receptive = torch.tensor(k).prod().item()
    # each output sums over in/groups channels x kernel; each input feeds out/groups channels x kernel
    assert fans(layer.weight, layer) == (8 // groups * receptive, 16 // groups * receptive)


def test_strided_conv_fan_out_counts_output_positions():
    layer = nn.Conv2d(8, 16, 4, stride=2)
    assert fans(layer.weight, layer) == (8 * 16, 16 * 16 // 4)
    odd = nn.Conv1d(8, 16, 3, stride=2)
    assert fans(odd.weight, odd) == (24, 24.0)


@pytest.mark.parametrize("cls,k", [(nn.ConvTranspose1d, (3,)), (nn.ConvTranspose2d, (3, 3)),
                                   (nn.ConvTranspose3d, (2, 3, 3))])
@pytest.mark.parametrize("groups", [1, 2])
def test_conv_transpose_weight_is_in_out(cls, k, groups):
    layer = cls(8, 12, k, groups=groups)
    assert layer.weight.shape[:2] == (8, 12 // groups)
    receptive = torch.tensor(k).prod().item()
    assert fans(layer.weight, layer) == (8 // groups * receptive, 12 // groups * receptive)
    # torch reads the layout as (out, in): its fans are swapped for ConvTranspose (groups=1)
    if groups == 1:
        assert nn.init._calculate_fan_in_and_fan_out(layer.weight) == (12 * receptive, 8 * receptive)


@pytest.mark.parametrize("k,stride", [(4, 2), (2, 2), (3, 1), (6, 3)])
def test_strided_conv_transpose_he_preserves_the_second_moment(k, stride):
    # He with initwise's fan_in keeps E[y^2] = 2 E[x^2] at the interior output positions
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(64, 64, k, stride=stride, bias=False)
    fan_in, _ = fans(layer.weight, layer)
    assert fan_in == 64 * k * k / stride ** 2
    import initwise
    initwise.kaiming_normal_(layer.weight, fans=fans(layer.weight, layer),
                             generator=torch.Generator().manual_seed(0))
    x = torch.randn(16, 64, 12, 12)
    y = layer(x)[..., k:-k, k:-k]  # away from the borders, which receive fewer taps
    assert y.square().mean().item() == pytest.approx(2.0, rel=0.1)


def test_embedding_one_hot_view():
    layer = nn.Embedding(1000, 32)
    assert fans(layer.weight, layer) == (1, 32)


@pytest.mark.parametrize("cls,gates", [(nn.RNN, 1), (nn.LSTM, 4), (nn.GRU, 3)])
def test_recurrent_per_gate_block(cls, gates):
    layer = cls(10, 20, num_layers=2, bidirectional=True)
    assert fans(layer.weight_ih_l0, layer) == (10, 20)
    assert fans(layer.weight_hh_l0, layer) == (20, 20)
    assert fans(layer.weight_ih_l1_reverse, layer) == (40, 20)  # layer 2 reads both directions
    assert param_blocks(layer, "weight_hh_l1") == gates
    assert param_blocks(layer, "bias_ih_l0") == gates


def test_lstm_projection_and_cells():
    layer = nn.LSTM(10, 20, proj_size=5)
    assert fans(layer.weight_hh_l0, layer) == (5, 20)
    assert fans(layer.weight_hr_l0, layer) == (20, 5)
    assert param_blocks(layer, "weight_hr_l0") == 1
    cell = nn.GRUCell(6, 9)
    assert fans(cell.weight_ih, cell) == (6, 9)
    assert param_blocks(cell, "weight_hh") == 3


def test_multihead_attention_in_proj_per_qkv_block():
    layer = nn.MultiheadAttention(16, 4)
    assert layer.in_proj_weight.shape == (48, 16)
    assert fans(layer.in_proj_weight, layer) == (16, 16)
    assert param_blocks(layer, "in_proj_weight") == 3
    assert fans(layer.out_proj.weight, layer.out_proj) == (16, 16)


def test_shape_with_name_and_parametrized_original():
    layer = nn.LSTM(3, 7)
    assert fans((28, 7), layer, name="weight_hh_l0") == (7, 7)
    wn = parametrizations.weight_norm(nn.Conv2d(4, 6, 3, groups=2))
    direction = wn.parametrizations.weight.original1
    assert fans(direction, wn) == (2 * 9, 3 * 9)


def test_errors():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        fans(torch.empty(5))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        fans(())
    with pytest.raises(TypeError, match="tensor or a shape"):
        fans("3x4")
    with pytest.raises(ValueError, match="cannot tell which parameter"):
        fans(torch.empty(4, 3), nn.Linear(3, 4))
    with pytest.raises(ValueError, match="not divisible by 4"):
        fans((10, 3), nn.LSTM(3, 5), name="weight_ih_l0")
    with pytest.raises(TypeError, match="nn.Module"):
        fans((4, 3), layer="linear")

import pytest
import torch
from torch import nn

from tasks.fsc.task import FSCProtocol
from tasks.text_head import TrainSettings, predict, train_text_classifier

SETTINGS = TrainSettings(epochs=60, batch_size=16, lr=1e-2, weight_decay=5e-4, temperature=0.2, grad_clip=1.0,
                         seed=3)


def separable(n_per_class=12, classes=4, dim=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g) * 3
    y = torch.arange(classes).repeat_interleave(n_per_class)
    return centers[y] + 0.3 * torch.randn(len(y), dim, generator=g), y


def test_linear_projection_learns_a_separable_problem_deterministically():
    x, y = separable()
    text = torch.nn.functional.normalize(torch.randn(4, 6, generator=torch.Generator().manual_seed(1)), dim=1)
    model, losses = train_text_classifier(x, y, text, None, SETTINGS)
    assert losses[-1] < losses[0] / 2
    assert (predict(model, x) == y).float().mean() > 0.9
    model2, losses2 = train_text_classifier(x, y, text, None, SETTINGS)
    assert losses == losses2
    torch.testing.assert_close(model.embed.weight, model2.embed.weight, rtol=0, atol=0)


class DenseNeck(nn.Module):
    """A stand-in neck over a dense dict: pool one level, project to 5 dims (≠ the text width)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 5)

    def forward(self, dense):
        return self.proj(dense["L0"].mean(dim=(2, 3)))


def test_a_neck_is_trained_and_widened_to_the_text_space():
    x, y = separable(dim=3)
    dense = {"L0": x[:, :, None, None].expand(-1, -1, 2, 2).contiguous()}
    text = torch.nn.functional.normalize(torch.randn(4, 6, generator=torch.Generator().manual_seed(1)), dim=1)
    neck = DenseNeck()
    before = neck.proj.weight.clone()
    model, _ = train_text_classifier(dense, y, text, neck, SETTINGS)
    assert not torch.equal(before, neck.proj.weight)  # the neck itself trained
    assert isinstance(model.embed, nn.Sequential) and model.embed[1].out_features == 6
    assert (predict(model, dense) == y).float().mean() > 0.9


def test_protocol_keeps_only_the_chosen_heads_keys():
    lp = FSCProtocol(head="linear-probe", shots=4)
    assert lp.c_grid and lp.epochs is None and lp.text_space is None
    tc = FSCProtocol.model_validate({"head": "text-classifier", "shots": 4, "c_grid": [1.0], "epochs": 7})
    assert tc.c_grid is None and tc.epochs == 7 and tc.lr == pytest.approx(1e-4) and tc.temperature == 0.2
    assert FSCProtocol.model_validate({"head": "linear-probe", "epochs": 7}) == FSCProtocol(head="linear-probe")


class SmallBatches:
    """A feature source that can hold only `micro` rows at once (as a FeatureSet of big dense maps)."""

    def __init__(self, x, micro):
        self.x, self.micro, self.largest = x, micro, 0

    def __len__(self):
        return len(self.x)

    def rows_per_batch(self, wanted):
        return min(wanted, self.micro)

    def rows(self, index):
        self.largest = max(self.largest, len(index))
        return self.x[index]


def test_micro_batches_accumulate_the_same_step_as_the_whole_mini_batch():
    """Gradient accumulation over micro-batches of 5 = one step on the 16-row mini-batch (float64, to 1e-12)."""
    x, y = separable()
    x = x.double()
    text = torch.nn.functional.normalize(torch.randn(4, 6, generator=torch.Generator().manual_seed(1)), dim=1)
    settings = TrainSettings(**{**SETTINGS.__dict__, "epochs": 5, "dtype": torch.float64})
    whole, losses = train_text_classifier(x, y, text, None, settings)
    source = SmallBatches(x, micro=5)
    micro, micro_losses = train_text_classifier(source, y, text, None, settings)
    assert source.largest == 5
    torch.testing.assert_close(micro.embed.weight, whole.embed.weight, rtol=0, atol=1e-12)
    assert micro_losses == pytest.approx(losses, abs=1e-12)

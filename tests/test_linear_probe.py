"""The feature-extraction baseline trains a copy of the classifier on frozen features."""
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from archsearch.train.linear_probe import ProbeResult, classifier_inputs, linear_probe


def _blobs(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centers = torch.tensor([[4.0, 0.0], [0.0, 4.0], [-4.0, -4.0]])
    return TensorDataset(centers[y] + torch.randn(n, 2, generator=g), y)


def test_probe_learns_separable_features_and_leaves_the_model_alone():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 3))
    with torch.no_grad():  # a frozen "backbone" that keeps the blobs apart
        model[0].weight.copy_(torch.eye(2))
        model[0].bias.zero_()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    train, test = DataLoader(_blobs(600, 0), batch_size=64), DataLoader(_blobs(300, 1), batch_size=64)
    result = linear_probe(model, model[1], train, {"test": test, "train": train}, "cpu", epochs=20)
    assert isinstance(result, ProbeResult)
    assert set(result.accuracy) == {"test", "train"}
    assert result.accuracy["test"] >= 95.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and all(p.grad is None for p in model.parameters())
    # the head is a trained copy of the classifier that works in its place on the raw features
    assert type(result.head) is nn.Linear and result.head.weight.shape == model[1].weight.shape
    x, y = (torch.cat(t) for t in zip(*test))
    with torch.no_grad():
        direct = 100.0 * int((result.head(model[0](x)).argmax(1) == y).sum()) / len(y)
    assert abs(direct - result.accuracy["test"]) < 1e-9


def test_probe_is_deterministic_whatever_the_global_random_state():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 3))
    train = DataLoader(_blobs(200, 0), batch_size=64)
    torch.manual_seed(1)
    a = linear_probe(model, model[1], train, {}, "cpu", epochs=3, seed=7)
    torch.manual_seed(2)
    b = linear_probe(model, model[1], train, {}, "cpu", epochs=3, seed=7)
    assert torch.equal(a.head.weight, b.head.weight) and torch.equal(a.head.bias, b.head.bias)
    assert a.accuracy == {}


def test_classifier_inputs_are_what_the_classifier_sees():
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3))
    loader = DataLoader(_blobs(50, 2), batch_size=16)
    feats, labels = classifier_inputs(model, model[2], loader, "cpu")
    x = torch.cat([b[0] for b in loader])
    assert torch.allclose(feats, torch.relu(model[0](x)).detach())
    assert labels.shape == (50,)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_standardisation_folds_exactly_into_every_classifier():
    from archsearch.train.linear_probe import _channel_stats, _Standardised

    heads = [nn.Linear(6, 4), nn.Linear(6, 4, bias=False), nn.Conv2d(6, 4, 1), nn.Conv2d(6, 4, 3, padding=1),
             nn.Conv2d(6, 4, 3, padding="same", dilation=2, bias=False), nn.Conv2d(6, 4, 2, padding="same"),
             nn.Conv2d(6, 9, 3, stride=2, padding=2, groups=3), nn.Conv2d(6, 4, 3, padding=1, padding_mode="reflect"),
             nn.Conv2d(6, 6, 3, padding=1, groups=6, padding_mode="circular")]
    g = torch.Generator().manual_seed(0)
    for head in heads:
        shape = (32, 6) if isinstance(head, nn.Linear) else (32, 6, 7, 7)
        x = torch.rand(*shape, generator=g) * torch.linspace(0.1, 300.0, 6).view(1, 6, *([1] * (len(shape) - 2))) + 5
        trainee = _Standardised(head, *_channel_stats(head, x))
        with torch.no_grad():
            expected, folded = trainee(x), trainee.folded()(x)
        assert type(trainee.folded()) is type(head)
        assert torch.allclose(folded, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max())), head

"""The feature-extraction baseline trains a copy of the classifier on frozen features."""
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from archsearch.train.linear_probe import classifier_inputs, linear_probe


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
    train, test = DataLoader(_blobs(600, 0), batch_size=64), DataLoader(_blobs(300, 1), batch_size=64)
    accuracy = linear_probe(model, model[1], train, test, "cpu", epochs=20)
    assert accuracy >= 95.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_classifier_inputs_are_what_the_classifier_sees():
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3))
    loader = DataLoader(_blobs(50, 2), batch_size=16)
    feats, labels = classifier_inputs(model, model[2], loader, "cpu")
    x = torch.cat([b[0] for b in loader])
    assert torch.allclose(feats, torch.relu(model[0](x)).detach())
    assert labels.shape == (50,)

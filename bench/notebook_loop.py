"""The course notebook's own training loop, kept verbatim in spirit for benchmark baselines.

DataLoader + ToTensor, batch 64, shuffle, nn.Module + CrossEntropyLoss + optim.SGD, and the
per-batch loss.item() the notebook does.
"""

from __future__ import annotations

import time

import torch
from torch import nn, optim
from torchvision import datasets, transforms


class MyNetwork(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 128)
        self.fc2 = nn.Linear(128, 64)
        self.fc3 = nn.Linear(64, 10)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.size(0), -1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


def notebook_epoch_seconds(root: str, momentum: float = 0.0,
                           epochs: int = 1) -> tuple[float, float]:
    """(seconds per epoch, test accuracy %) of the notebook's loop on the baseline model."""
    transform = transforms.ToTensor()
    train_ds = datasets.MNIST(root=root, train=True, download=False, transform=transform)
    test_ds = datasets.MNIST(root=root, train=False, download=False, transform=transform)
    train_loader = torch.utils.data.DataLoader(train_ds, batch_size=64, shuffle=True)
    test_loader = torch.utils.data.DataLoader(test_ds, batch_size=64, shuffle=False)
    model = MyNetwork()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=momentum)
    losses = []
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for data, targets in train_loader:
            optimizer.zero_grad()
            loss = criterion(model(data), targets)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    per_epoch = (time.perf_counter() - start) / epochs
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in test_loader:
            predicted = model(images).argmax(1)
            total += labels.size(0)
            correct += int((predicted == labels).sum())
    return per_epoch, 100.0 * correct / total

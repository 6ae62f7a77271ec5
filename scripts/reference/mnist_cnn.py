"""PyTorch's MNIST example network, trained as kiln's reference for `--model cnn`.

The network is `Net` of pytorch/examples `mnist/main.py` (Conv2d(1,32,3,1),
ReLU, Conv2d(32,64,3,1), ReLU, max_pool2d(2), Dropout(0.25), flatten,
Linear(9216,128), ReLU, Dropout(0.5), Linear(128,10), log_softmax), with the
example's optimizer and schedule (Adadelta(lr=1.0), StepLR(step_size=1,
gamma=0.7), one scheduler step per epoch) and loss (`F.nll_loss`, i.e.
nn.NLLLoss). The data pipeline, the loop and the printed lines are the
quickstart tutorial's (scripts/reference/quickstart.py: ToTensor only, no
Normalize), so that

    kiln train --model cnn --optimizer adadelta:lr=1.0 --scheduler step:step_size=1,gamma=0.7 --seed S ...

prints exactly what this prints with the same flags:

    PYTHONPATH=.libtorch python3 scripts/reference/mnist_cnn.py --seed 0 --epochs 2
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quickstart import add_job_arguments, datasets, test, train  # noqa: E402


class Net(nn.Module):
    """pytorch/examples mnist/main.py, unchanged."""

    def __init__(self):
        super(Net, self).__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        output = F.log_softmax(x, dim=1)
        return output


def main():
    p = argparse.ArgumentParser()
    add_job_arguments(p)
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--gamma", type=float, default=0.7)
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    training_data, test_data = datasets(args)
    if args.seed is not None:
        torch.manual_seed(args.seed)
    model = Net()
    train_dataloader = DataLoader(training_data, batch_size=args.batch_size, shuffle=not args.no_shuffle)
    test_dataloader = DataLoader(test_data, batch_size=args.batch_size)
    loss_fn = nn.NLLLoss()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=args.lr)
    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)
    for t in range(args.epochs):
        print(f"Epoch {t+1}\n-------------------------------")
        train(train_dataloader, model, loss_fn, optimizer)
        test(test_dataloader, model, loss_fn)
        scheduler.step()
    print("Training completed")


if __name__ == "__main__":
    main()

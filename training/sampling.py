"""Which clip comes next, reproducibly: the order of an epoch and every clip's random draws follow from the seed.

A training run resumed from a checkpoint must see the same clips as an uninterrupted run. Here nothing about the
data depends on a generator's state: the order of epoch e is drawn from (seed, e) and the clip of video i in epoch e
(frames, augmentation) from (seed, e, i), whatever the number of workers or processes. The data position is then
just (epoch, batches consumed), which a checkpoint records.
"""

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def derived_seed(*entropy: int) -> int:
    """A 63-bit seed mixed from non-negative integers (numpy's SeedSequence: nearby inputs give unrelated seeds)."""
    return int(np.random.SeedSequence(list(entropy)).generate_state(2, np.uint64)[0] >> np.uint64(1))


class EpochOrderSampler(Sampler):
    """Every index of a dataset once per epoch, in the order drawn from (seed, epoch); yields (epoch, index) keys.

    `set_epoch` chooses the epoch (Accelerate's prepared data loaders call it). Under `accelerate launch` every
    process draws the same order and takes its own share of the batches.
    """

    def __init__(self, num_items: int, seed: int):
        self.num_items = num_items
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self):
        order = torch.Generator().manual_seed(derived_seed(self.seed, self.epoch))
        for index in torch.randperm(self.num_items, generator=order).tolist():
            yield self.epoch, index


class SeededDataset(Dataset):
    """A dataset whose items draw from torch's global generator (as `AvisegClipDataset`'s clip sampling and
    augmentation do), made a function of (seed, epoch, index): item (epoch, index) is drawn under the seed derived
    from them, and the global generator is left as it was."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derived_seed(self.seed, epoch, index))
            return self.dataset[index]


__all__ = ["EpochOrderSampler", "SeededDataset", "derived_seed"]

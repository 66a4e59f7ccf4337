"""A data order that a resumed (or differently parallelized) run reproduces sample for sample.

BasicSR's ``EnlargedSampler`` shuffles each epoch with ``torch.randperm`` seeded by the epoch and
gives rank ``r`` every ``world_size``-th index; random crops and flips then draw from the global
``random``/``numpy``/``torch`` generators of whichever process (main or worker) loads the sample,
so they depend on the number of workers, on the rank and on where the run was resumed.

Here :class:`ResumableSampler` keeps BasicSR's permutation and split but yields
``(index, sample_seed)`` pairs, ``sample_seed`` derived from the run's seed, the epoch and the
sample's position in the epoch's global permutation; :class:`SeededSamples` loads each sample
with the three global generators seeded by it (and restored afterwards). A sample's pixels thus
depend only on (seed, epoch, position): the same with 0 or 8 workers, on one rank with batch
``B`` or split over two ranks with batch ``B/2``, and after a resume that skips the batches the
epoch already used (:meth:`ResumableSampler.set_epoch` ``skip``). :func:`rng_state` /
:func:`set_rng_state` save and restore the main process's generators, :func:`preserved_rng` runs
code (validation, creating a loader iterator) without moving them.
"""
import contextlib
import math
import random

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ['ResumableSampler', 'SeededSamples', 'rng_state', 'set_rng_state', 'preserved_rng', 'sample_seed']


def sample_seed(seed, epoch, position):
    """The 32-bit seed of the sample at ``position`` of ``epoch``'s global permutation."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, epoch, position]).generate_state(1)[0])


class ResumableSampler(Sampler):
    """``EnlargedSampler``'s order and rank split, yielding ``(index, sample_seed)``; the first
    ``skip`` samples of this rank's share of the epoch are left out (a resumed epoch)."""

    def __init__(self, dataset, num_replicas, rank, ratio=1, seed=0):
        self.dataset_size = len(dataset)
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.num_samples = math.ceil(self.dataset_size * ratio / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch, skip=0):
        self.epoch, self.skip = epoch, skip

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.epoch)  # BasicSR's permutation
        order = torch.randperm(self.total_size, generator=g).tolist()
        for position in range(self.rank + self.skip * self.num_replicas, self.total_size, self.num_replicas):
            yield order[position] % self.dataset_size, sample_seed(self.seed, self.epoch, position)

    def __len__(self):
        return self.num_samples - self.skip


def rng_state():
    """The Python, NumPy, torch (and CUDA) generator states of this process."""
    state = {'python': random.getstate(), 'numpy': np.random.get_state(), 'torch': torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore what :func:`rng_state` returned."""
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


@contextlib.contextmanager
def preserved_rng():
    """Run the block, then put the process's generators back where they were."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


class SeededSamples(Dataset):
    """``dataset[index]`` loaded with the global generators seeded by the sample's seed."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        with preserved_rng():
            random.seed(seed)
            np.random.seed(seed)
            torch.random.default_generator.manual_seed(seed)  # CPU only: CUDA seeding is lazy
            return self.dataset[index]

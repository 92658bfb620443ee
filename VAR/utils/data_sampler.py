"""Samplers: contiguous evaluation shards and the infinite, resumable training batch sampler (upstream ``data_sampler.py``)."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data.sampler import Sampler


class EvalDistributedSampler(Sampler):
    """Rank ``rank`` iterates its contiguous 1/``num_replicas`` share of ``range(len(dataset))`` in order."""

    def __init__(self, dataset, num_replicas: int, rank: int) -> None:
        seps = np.linspace(0, len(dataset), num_replicas + 1, dtype=int)
        self.indices = tuple(range(int(seps[rank]), int(seps[rank + 1])))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class DistInfiniteBatchSampler(Sampler):
    """Infinite batch sampler over epochs; epoch ``e``'s order is a permutation seeded by ``e + seed``.

    Every rank builds the same global permutation (padded to a whole number of global batches when
    ``fill_last``) and takes its own contiguous slice, then yields local batches of
    ``glb_batch_size // world_size`` indices.

    fix(upstream): upstream never applied ``start_it`` (it compared after bumping the epoch counter).
    Here the first epoch starts at batch ``start_it``, so a run resumed mid-epoch at
    ``(start_ep, start_it)`` sees exactly the batches an uninterrupted run would.

    Parameters
    ----------
    world_size, rank : int
        Process-group size and this process's rank.
    dataset_len : int
        Number of training windows.
    glb_batch_size : int
        Batch over all ranks per iteration (divisible by ``world_size``).
    same_seed_for_all_ranks : int
        Offset added to the epoch seed.
    repeated_aug : int
        Repeat each index this many times (0/1 = off).
    fill_last : bool
        Pad the last global batch with indices from the start of the permutation.
    shuffle : bool
        Permute (else natural order).
    start_ep, start_it : int
        Resume position: epoch index and iteration inside it.
    """

    def __init__(self, world_size: int, rank: int, dataset_len: int, glb_batch_size: int,
                 same_seed_for_all_ranks: int = 0, repeated_aug: int = 0, fill_last: bool = False,
                 shuffle: bool = True, start_ep: int = 0, start_it: int = 0) -> None:
        if glb_batch_size % world_size != 0:
            raise ValueError(f"glb_batch_size={glb_batch_size} is not divisible by world_size={world_size}")
        if dataset_len < 1:
            raise ValueError("dataset_len must be >= 1")
        self.world_size, self.rank = world_size, rank
        self.dataset_len, self.glb_batch_size = dataset_len, glb_batch_size
        self.batch_size = glb_batch_size // world_size
        self.iters_per_ep = (dataset_len + glb_batch_size - 1) // glb_batch_size
        self.max_p = self.iters_per_ep * glb_batch_size
        self.same_seed_for_all_ranks = same_seed_for_all_ranks
        self.repeated_aug, self.fill_last, self.shuffle = repeated_aug, fill_last, shuffle
        if not 0 <= start_it < self.iters_per_ep:
            raise ValueError(f"start_it={start_it} outside [0, {self.iters_per_ep})")
        self.epoch, self.start_it = start_ep, start_it

    def gener_indices(self, epoch: int | None = None) -> torch.Tensor:
        """This rank's indices for ``epoch`` (default: the current epoch)."""
        epoch = self.epoch if epoch is None else epoch
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(epoch + self.same_seed_for_all_ranks)
            global_indices = torch.randperm(self.dataset_len, generator=g)
            if self.repeated_aug > 1:
                n = (self.dataset_len + self.repeated_aug - 1) // self.repeated_aug
                global_indices = global_indices[:n].repeat_interleave(self.repeated_aug)[: self.dataset_len]
        else:
            global_indices = torch.arange(self.dataset_len)
        filling = self.max_p - global_indices.shape[0]
        if filling > 0 and self.fill_last:
            reps = (filling + global_indices.shape[0] - 1) // global_indices.shape[0]
            global_indices = torch.cat((global_indices, global_indices.repeat(reps)[:filling]))
        seps = torch.linspace(0, global_indices.shape[0], self.world_size + 1, dtype=torch.int)
        return global_indices[int(seps[self.rank]): int(seps[self.rank + 1])]

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            indices = self.gener_indices(self.epoch).tolist()
            p = self.start_it * self.batch_size
            self.start_it = 0  # only the first (resumed) epoch is entered mid-way
            while p < len(indices):
                batch = indices[p: p + self.batch_size]
                if batch:
                    yield batch
                p += self.batch_size
            self.epoch += 1

    def __len__(self) -> int:
        return self.iters_per_ep

"""In-memory synthetic regression data for tests and wiring checks: y = tanh(x W).

Inputs x are standard normal `(N, dim_in)`, W `(dim_in, dim_out)` is fixed by `seed`, so every process
(and every DDP rank) builds the same data. Splits are independent draws: train, val, test.
"""

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


class TinyRegressionDataModule(L.LightningDataModule):
    def __init__(
        self,
        num_train: int = 256,
        num_val: int = 64,
        num_test: int = 64,
        dim_in: int = 8,
        dim_out: int = 4,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value in [("num_train", num_train), ("num_val", num_val), ("num_test", num_test),
                            ("dim_in", dim_in), ("dim_out", dim_out), ("batch_size", batch_size)]:
            if value < 1:
                raise ValueError(f"TinyRegressionDataModule: {name} must be >= 1, got {value}")
        if num_workers < 0:
            raise ValueError(f"TinyRegressionDataModule: num_workers must be >= 0, got {num_workers}")
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.dim_in, self.dim_out = dim_in, dim_out
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.splits: dict[str, TensorDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        gen = torch.Generator().manual_seed(self.seed)
        weight = torch.randn(self.dim_in, self.dim_out, generator=gen) / self.dim_in**0.5  # (D_in, D_out)
        for split, n in self.sizes.items():
            x = torch.randn(n, self.dim_in, generator=gen)  # (N, D_in)
            self.splits[split] = TensorDataset(x, torch.tanh(x @ weight))  # y: (N, D_out)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

"""A two-layer MLP for the tests-only `tiny` experiment; not part of PersonaTalk.

Letters: b batch, d width.
"""

import torch
from torch import nn


class TinyMLP(nn.Module):
    """x `(b, dim_in)` -> y `(b, dim_out)`."""

    def __init__(self, dim_in: int, dim_hidden: int, dim_out: int) -> None:
        super().__init__()
        self.dim_in = dim_in
        self.to_hidden = nn.Linear(dim_in, dim_hidden)
        self.to_out = nn.Linear(dim_hidden, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim_in:
            raise ValueError(f"TinyMLP: x must be (batch, {self.dim_in}), got {tuple(x.shape)}")
        h = torch.relu(self.to_hidden(x))  # (b, d_hidden)
        return self.to_out(h)  # (b, d_out)

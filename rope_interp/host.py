"""What rope-interp uses of a TransformerLens model, for the type checker.

A model is either host's: a `HookedTransformer` (TransformerLens 3.x) or a `TransformerBridge`
(4.x); only one of them can be imported in a given environment, so `HostModel` is a Protocol of
what both provide (`cfg`, calling it, `run_with_hooks`, `hooks`, `parameters`; any other
attribute reads as `Any`). At run time the hosts are duck-typed: `HostModel` is `Any` there, so
that the shape checks the tests run do not turn it into an isinstance test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:

    class HostModel(Protocol):
        cfg: Any

        def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

        def run_with_hooks(self, *args: Any, **kwargs: Any) -> Any: ...

        def hooks(self, *args: Any, **kwargs: Any) -> Any: ...

        def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]: ...

        def __getattr__(self, name: str) -> Any: ...

else:
    HostModel = Any
    del Protocol, Iterator, torch

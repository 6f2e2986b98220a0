"""Generic hook context managers on modules named by dotted path (no architecture here): every name is resolved
before any hook is registered, and hooks live from ``__enter__`` to ``__exit__``, exceptions included."""
from __future__ import annotations

import difflib
from typing import Callable, Mapping

import torch
from torch import nn

InputFn = Callable[[torch.Tensor], "torch.Tensor | None"]  # a module's first input -> None (read) or a replacement


def get_module(model: nn.Module, name: str) -> nn.Module:
    """Return the submodule at dotted path ``name``; raise ``LookupError`` with close matches."""
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    close = difflib.get_close_matches(name, list(modules), n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise LookupError(f"{type(model).__name__} has no module named {name!r}.{hint}")


def module_device(module: nn.Module) -> torch.device:
    """Where the module computes: accelerate's execution device if it has one, else its weights' device."""
    device = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
    if device is not None:
        return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    param = next(module.parameters(), None)
    return param.device if param is not None and param.device.type != "meta" else torch.device("cpu")


class StopForward(Exception):
    """Raised inside a hook to end a forward pass early; swallowed by ``input_hooks(stop=...)``."""


class input_hooks:
    """Attach forward pre-hooks that read or replace the first positional input of named modules.

    ``fns`` maps a dotted module path to ``fn(x) -> None | Tensor`` (or a list of them, run in order), ``x`` being
    the module's first input (batch, tokens, width), or (batch*tokens, width) where the layer flattens it (OPT); a
    returned tensor replaces the input. If ``stop`` names a module, the forward pass ends right after its hook (no
    later layer, no LM head). A block can be entered again after its exit, not while it is active.

    >>> with input_hooks(model, {"model.layers.0.mlp.down_proj": print_shape}):
    ...     model(**batch)
    """

    def __init__(self, model: nn.Module, fns: Mapping[str, InputFn | list[InputFn]], stop: str | None = None):
        self.model, self.fns, self.stop = model, fns, stop
        self.modules = {name: get_module(model, name) for name in fns}  # all resolved before any hook
        if stop is not None and stop not in self.modules:
            raise ValueError(f"stop={stop!r} must be one of the hooked modules")
        self.handles: list[torch.utils.hooks.RemovableHandle] | None = None  # None: not active

    @staticmethod
    def _make(fns: list[InputFn], stop: bool):
        def pre_hook(module, args, kwargs):
            key = None if args else next(iter(kwargs))  # a module called with its input as a keyword argument
            x = new = args[0] if args else kwargs[key]
            for fn in fns:
                if (out := fn(new)) is not None:
                    new = out
            if stop:
                raise StopForward
            if new is x:
                return None
            return ((new, *args[1:]), kwargs) if key is None else (args, {**kwargs, key: new})

        return pre_hook

    def __enter__(self) -> "input_hooks":
        if self.handles is not None:
            raise RuntimeError(f"this {type(self).__name__} block is already active; create a new one to nest")
        self.handles = []
        try:
            for name, f in self.fns.items():
                hook = self._make(f if isinstance(f, list) else [f], name == self.stop)
                self.handles.append(self.modules[name].register_forward_pre_hook(hook, with_kwargs=True))
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for handle in reversed(self.handles or []):
            handle.remove()
        self.handles = None

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return exc_type is StopForward and self.stop is not None  # only a block that stops swallows the stop

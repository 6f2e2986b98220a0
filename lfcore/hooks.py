"""Generic hook context managers on named modules.

Nothing here knows an architecture: callers pass dotted module paths (see ``models.neuron_sites``).
Every name is resolved before any hook is registered, hooks are registered on ``__enter__`` and always
removed on ``__exit__`` (exceptions included), so a model never keeps a stray hook.
"""
from __future__ import annotations

import difflib
from typing import Callable, Mapping

import torch
from torch import nn

# A pre-hook function receives the module's first positional input, shape (batch, tokens, width) or, where
# the layer flattens it first (OPT), (batch*tokens, width), and returns None (read only) or a replacement
# tensor of the same shape.
InputFn = Callable[[torch.Tensor], "torch.Tensor | None"]


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
    hf_hook = getattr(module, "_hf_hook", None)
    device = getattr(hf_hook, "execution_device", None)
    if device is not None:
        return torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    param = next(module.parameters(), None)
    if param is None or param.device.type == "meta":
        return torch.device("cpu")
    return param.device


class StopForward(Exception):
    """Raised inside a hook to end a forward pass early; swallowed by ``input_hooks(stop=...)``."""


class input_hooks:
    """Attach forward pre-hooks that read or replace the first positional input of named modules.

    ``fns`` maps a dotted module path to a function ``fn(x) -> None | Tensor`` where ``x`` is the
    module's first positional input (batch, tokens, width), or (batch*tokens, width) in layers that flatten
    it (OPT). Returning a tensor replaces the input.
    Several functions on one module run in the given order. If ``stop`` names a module, the forward
    pass is abandoned right after that module's hook ran (no later layer, no LM head is computed),
    and the ``StopForward`` raised for this is swallowed on exit.

    >>> with input_hooks(model, {"model.layers.0.mlp.down_proj": print_shape}):
    ...     model(**batch)
    """

    def __init__(self, model: nn.Module, fns: Mapping[str, InputFn | list[InputFn]], stop: str | None = None):
        self.model = model
        self.fns = {name: (f if isinstance(f, list) else [f]) for name, f in fns.items()}
        self.stop = stop
        # resolve every name before registering anything: a bad name must leave no hook behind
        self.modules = {name: get_module(model, name) for name in self.fns}
        if stop is not None and stop not in self.modules:
            raise ValueError(f"stop={stop!r} must be one of the hooked modules")
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def _make(self, name: str):
        fns, stop = self.fns[name], name == self.stop

        def pre_hook(module, args, kwargs):
            if args:
                x, rest, in_kwargs = args[0], args[1:], None
            else:  # a module called with its input as a keyword argument
                key = next(iter(kwargs))
                x, rest, in_kwargs = kwargs[key], (), key
            changed = False
            for fn in fns:
                out = fn(x)
                if out is not None:
                    x, changed = out, True
            if stop:
                raise StopForward
            if not changed:
                return None
            if in_kwargs is None:
                return (x, *rest), kwargs
            return args, {**kwargs, in_kwargs: x}

        return pre_hook

    def __enter__(self) -> "input_hooks":
        try:
            for name, module in self.modules.items():
                self.handles.append(module.register_forward_pre_hook(self._make(name), with_kwargs=True))
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for handle in reversed(self.handles):
            handle.remove()
        self.handles.clear()

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return exc_type is StopForward

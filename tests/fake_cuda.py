"""A fake CUDA device on the CPU, for testing that code which keeps logits on a GPU never mixes
them with CPU tensors (`model.logits_on_device`), on a machine without a GPU.

Inside `FakeCuda()` (a TorchFunctionMode) every tensor made "on cuda" (`.to("cuda")`,
`device="cuda"` in a factory, or derived by any op from such a tensor) is computed on the CPU
but TAGGED, and `.device` of a tagged tensor reads `cuda`. The mode then enforces CUDA's
placement rules, raising `DeviceMix` where a real GPU would raise:

- an op over tagged tensors and untagged (CPU) tensors fails unless every untagged one is
  0-dimensional (CUDA accepts CPU scalars) or an index of `t[...]` / `t[...] = v`;
- `index_select` / `gather` / `scatter` / `cat` / `stack` with a CPU tensor argument fail
  (same-device kernels);
- `.numpy()` of a tagged tensor fails (CUDA tensors have no numpy view);
- a random draw (`multinomial`, `rand`, ...) over tagged tensors, or with device="cuda", with a
  generator must use one made by `mode.cuda_generator(seed)` (CUDA needs a CUDA generator),
  and a draw for CPU tensors must not use one (no generator: the device's default, allowed);
- `.cpu()` / `.to("cpu")` return an untagged copy; `.tolist()`, `.item()`, `int()` work (a sync).

It models placement only (not streams, not numerics): enough to catch a `torch.tensor(...)` made
on the CPU and combined with the logits, a CPU generator, a `.numpy()` of device logits.
"""

from __future__ import annotations

import weakref

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

CUDA = torch.device("cuda")


class DeviceMix(RuntimeError):
    """A placement error a GPU would raise; the message names the first caller outside torch."""

    def __init__(self, msg: str):
        import traceback

        where = next((f"{f.filename.rsplit('/', 2)[-2]}/{f.filename.rsplit('/', 1)[-1]}:{f.lineno}"
                      for f in reversed(traceback.extract_stack()[:-1])
                      if "/torch/" not in f.filename and not f.filename.endswith("fake_cuda.py")), "?")
        super().__init__(f"{msg} (at {where})")


def _is_cuda(d) -> bool:
    try:
        return d is not None and torch.device(d).type == "cuda"
    except (TypeError, RuntimeError):
        return False


INDEXING = {torch.Tensor.__getitem__, torch.Tensor.__setitem__}
SAME_DEVICE = {torch.index_select, torch.Tensor.index_select, torch.gather, torch.Tensor.gather,
               torch.Tensor.scatter, torch.Tensor.scatter_, torch.scatter, torch.cat, torch.stack}
RANDOM = {torch.multinomial, torch.Tensor.multinomial, torch.rand, torch.randn, torch.randint, torch.randperm,
          torch.bernoulli, torch.Tensor.uniform_, torch.Tensor.exponential_}
TO_CPU = {torch.Tensor.cpu}
PASSIVE = {torch.Tensor.tolist, torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.__int__,
           torch.Tensor.__float__, torch.Tensor.__len__, torch.Tensor.__repr__, torch.Tensor.__format__,
           torch.Tensor.dim, torch.Tensor.size, torch.Tensor.numel, torch.Tensor.__hash__}


class FakeCuda(TorchFunctionMode):
    """skip_model=True (default): the model's own calls (between the engine's ModelTimer edges)
    run untraced: their tensors are the model's (on the CPU here, on the GPU there), not the
    logits the mode follows, and tracing every op of every forward would be slow."""

    def __init__(self, skip_model: bool = True):
        super().__init__()
        self.skip_model = skip_model
        self._saved = None
        self.tagged: dict[int, None] = {}  # ids of live tagged tensors (a finaliser drops each)
        self.generators: list[torch.Generator] = []
        self.ops = 0  # ops seen over tagged tensors (a test can require the path was exercised)

    def __enter__(self):
        if self.skip_model:
            from harness.engines.hf import ModelTimer

            enter, leave = ModelTimer._enter, ModelTimer._leave
            self._saved = (ModelTimer, enter, leave)

            def _enter(timer, module, args):
                if timer.depth == 0:
                    timer._untraced = torch._C.DisableTorchFunction()
                    timer._untraced.__enter__()
                return enter(timer, module, args)

            def _leave(timer, module, args, output):
                out = leave(timer, module, args, output)
                if timer.depth == 0 and getattr(timer, "_untraced", None) is not None:
                    timer._untraced.__exit__(None, None, None)
                    timer._untraced = None
                return out
            ModelTimer._enter, ModelTimer._leave = _enter, _leave
        return super().__enter__()

    def __exit__(self, *exc):
        out = super().__exit__(*exc)
        if self._saved is not None:
            cls, enter, leave = self._saved
            cls._enter, cls._leave = enter, leave
            self._saved = None
        return out

    def place(self, module: torch.nn.Module) -> torch.nn.Module:
        """Put a model 'on cuda': its parameters and buffers are tagged (they stay CPU tensors).
        Use with skip_model=False so that the model's own ops are checked too."""
        for t in list(module.parameters()) + list(module.buffers()):
            self._tag(t)
        return module

    def cuda_generator(self, seed: int) -> torch.Generator:
        """A seeded generator that passes for a CUDA one (`.device` reads cuda; it draws on the
        CPU, so its numbers equal a CPU generator's with the same seed)."""
        g = _CudaGenerator()
        g.manual_seed(seed)
        self.generators.append(g)
        return g

    def is_cuda(self, t) -> bool:
        return isinstance(t, torch.Tensor) and id(t) in self.tagged

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", str(func))
        leaves, _ = tree_flatten((args, kwargs))
        tensors = [x for x in leaves if isinstance(x, torch.Tensor)]
        tagged_in = any(self.is_cuda(t) for t in tensors)

        owner = getattr(func, "__self__", None)  # property getters come as <descriptor>.__get__
        if owner is torch.Tensor.device:
            return CUDA if tagged_in else func(*args, **kwargs)
        if owner is torch.Tensor.is_cuda:
            return tagged_in
        if func in TO_CPU or (func is torch.Tensor.to and _targets_cpu(args, kwargs)):
            out = func(*args, **kwargs)
            return out.clone() if tagged_in and out is args[0] else out  # a copy, untagged
        if func in (torch.Tensor.numpy, torch.Tensor.__array__) and tagged_in:
            raise DeviceMix("can't convert a cuda tensor to numpy (.numpy() of device logits)")

        to_cuda = False
        if func is torch.Tensor.to and _targets_cuda(args, kwargs):
            args, kwargs = _strip_device(args, kwargs)
            to_cuda = True
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
            to_cuda = True
        if func is torch.Tensor.cuda:
            to_cuda, func = True, torch.Tensor.clone

        if tagged_in:
            self.ops += 1
            self._check(func, name, args, kwargs, tensors)
        if func in RANDOM:
            g = kwargs.get("generator")
            is_cuda_gen = g is not None and any(g is x for x in self.generators)
            if (tagged_in or to_cuda) and g is not None and not is_cuda_gen:  # none: the device's default one
                raise DeviceMix(f"{name}: a random draw for cuda tensors with a CPU generator")
            if not (tagged_in or to_cuda) and is_cuda_gen:
                raise DeviceMix(f"{name}: a random draw for CPU tensors with a cuda generator")
        out = func(*args, **kwargs)
        if func in PASSIVE or not (tagged_in or to_cuda):
            return out
        if to_cuda and not tagged_in and out is (args[0] if args else None):
            out = out.clone()  # `.to("cuda")` of a CPU tensor is a new tensor; the CPU one stays untagged
        if func is torch.Tensor.__setitem__:
            return out
        return tree_map(lambda x: self._tag(x), out)

    def _tag(self, x):
        if isinstance(x, torch.Tensor) and id(x) not in self.tagged:
            self.tagged[id(x)] = None
            weakref.finalize(x, self.tagged.pop, id(x), None)
        return x

    def _check(self, func, name, args, kwargs, tensors):
        if func in INDEXING:
            self_t = args[0]
            if not self.is_cuda(self_t):
                raise DeviceMix(f"{name}: a CPU tensor indexed with cuda indices")
            if func is torch.Tensor.__setitem__:
                v = args[2] if len(args) > 2 else None
                if isinstance(v, torch.Tensor) and not self.is_cuda(v) and v.dim() > 0:
                    raise DeviceMix(f"{name}: a CPU tensor of shape {tuple(v.shape)} written into a cuda tensor")
            return
        cpu = [t for t in tensors if not self.is_cuda(t)]
        if func in SAME_DEVICE and cpu:
            raise DeviceMix(f"{name}: cuda and CPU tensors in a same-device op (CPU shapes {[tuple(t.shape) for t in cpu]})")
        big = [t for t in cpu if t.dim() > 0]
        if big:
            raise DeviceMix(f"{name}: cuda tensors mixed with CPU tensors of shapes {[tuple(t.shape) for t in big]}")


class _CudaGenerator(torch.Generator):
    @property
    def device(self):
        return CUDA


def _device_args(args, kwargs):
    ds = [a for a in args[1:] if isinstance(a, (str, torch.device))]
    if "device" in kwargs:
        ds.append(kwargs["device"])
    return ds


def _targets_cuda(args, kwargs) -> bool:
    return any(_is_cuda(d) for d in _device_args(args, kwargs))


def _targets_cpu(args, kwargs) -> bool:
    ds = _device_args(args, kwargs)
    return bool(ds) and all(not _is_cuda(d) and torch.device(d).type == "cpu" for d in ds)


def _strip_device(args, kwargs):
    """The same call with every cuda device argument replaced by the CPU."""
    cpu = torch.device("cpu")
    args = (args[0],) + tuple(cpu if isinstance(a, (str, torch.device)) and _is_cuda(a) else a for a in args[1:])
    kwargs = {k: (cpu if k == "device" and _is_cuda(v) else v) for k, v in kwargs.items()}
    return args, kwargs

"""What the methods' fitting modules share (torch: encoding only)."""

import torch


def pick_device(device: str | None = None) -> torch.device:
    """The requested device, else CUDA when available, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Adam:
    """Adam, computed as ``torch.optim.Adam(fused=True)`` computes it (its one fused kernel per group of
    parameters), bit for bit, without ``torch.optim``: that imports ``torch._dynamo`` and sympy on first
    use, about 2.4 s of every fresh worker process (its first chunk's fit). One call per group keeps
    the Python calls, which hold the GIL, few: two fits in threads overlap more (docs/method.md, "Encoding
    cost: what each lever bought").

    ``groups``: parameters, or dicts of ``"params"`` and any other keys (kept, like ``"lr"``, in
    :attr:`param_groups`). Parameters without a gradient are left alone, as torch does."""

    def __init__(self, groups, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        groups = list(groups)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups = [{"lr": lr, **group, "params": list(group["params"])} for group in groups]
        self._betas, self._eps = betas, eps
        self._state: dict[torch.Tensor, list] = {}  # parameter: [steps, mean, mean square]

    def zero_grad(self) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One step of every parameter with a gradient."""
        beta1, beta2 = self._betas
        for group in self.param_groups:
            params = [param for param in group["params"] if param.grad is not None]
            if not params:
                continue
            for param in params:
                if param not in self._state:  # the step count as torch's fused Adam keeps it: float32, on the device
                    self._state[param] = [torch.zeros((), dtype=torch.float32, device=param.device),
                                          torch.zeros_like(param), torch.zeros_like(param)]
            steps, means, mean_squares = (list(parts) for parts in zip(*(self._state[param] for param in params)))
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(params, [p.grad for p in params], means, mean_squares, [], steps, lr=group["lr"],
                               beta1=beta1, beta2=beta2, weight_decay=0.0, eps=self._eps, amsgrad=False,
                               maximize=False)

"""What the methods' fitting modules share (torch: encoding only)."""

import torch


def pick_device(device: str | None = None) -> torch.device:
    """The requested device, else CUDA when available, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Adam:
    """Adam, computed as ``torch.optim.Adam`` computes it one tensor at a time (its default on the
    CPU), bit for bit, without ``torch.optim``: that imports ``torch._dynamo`` and sympy on first
    use, about 2.4 s of every fresh worker process (its first chunk's fit).

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
        """One step of every parameter with a gradient, each group's in a few multi-tensor calls
        (fewer Python calls, which hold the GIL: two fits in threads overlap more; on the CPU the
        same arithmetic per tensor)."""
        beta1, beta2 = self._betas
        for group in self.param_groups:
            params = [param for param in group["params"] if param.grad is not None]
            if not params:
                continue
            for param in params:
                if param not in self._state:
                    self._state[param] = [0, torch.zeros_like(param), torch.zeros_like(param)]
            states = [self._state[param] for param in params]
            for state in states:
                state[0] += 1
            grads, means, mean_squares = [p.grad for p in params], [s[1] for s in states], [s[2] for s in states]
            torch._foreach_lerp_(means, grads, 1 - beta1)
            torch._foreach_mul_(mean_squares, beta2)
            torch._foreach_addcmul_(mean_squares, grads, grads, value=1 - beta2)
            denominators = torch._foreach_sqrt(mean_squares)
            torch._foreach_div_(denominators, [(1 - beta2 ** s[0]) ** 0.5 for s in states])
            torch._foreach_add_(denominators, self._eps)
            torch._foreach_addcdiv_(params, means, denominators, [-group["lr"] / (1 - beta1 ** s[0]) for s in states])

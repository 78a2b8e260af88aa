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
        beta1, beta2 = self._betas
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self._state.setdefault(param, [0, torch.zeros_like(param), torch.zeros_like(param)])
                state[0] += 1
                steps, mean, mean_square = state
                mean.lerp_(param.grad, 1 - beta1)
                mean_square.mul_(beta2).addcmul_(param.grad, param.grad, value=1 - beta2)
                denominator = (mean_square.sqrt() / (1 - beta2**steps) ** 0.5).add_(self._eps)
                param.addcdiv_(mean, denominator, value=-group["lr"] / (1 - beta1**steps))

"""One training loop for every model of the book.

:func:`fit` maximises ``model.terms(x, generator).mean().objective`` (the β-VAE objective or
any other :class:`~vaebook.objectives.ELBOTerms`-returning model) with Adam, shows a
``tqdm.auto`` progress bar, and returns the epoch-averaged history of every term.
Everything random (parameter noise, mini-batch order) is drawn from generators seeded by
``seed``, so two calls with the same arguments give the same numbers on the CPU.

The same loop trains an ensemble of ``M`` models at once (``vaebook.ensemble.EnsembleVAE``,
whose terms have shape ``(M, n)``): the loss is the sum over the members of their negated
objectives, so each member receives exactly the gradient of its own objective, and Adam, being
elementwise, updates each member's slice of the stacked parameters exactly as a separate Adam
would. Every member sees the same mini-batches; the history holds one value per member.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .checks import as_tensor, check_positive, check_positive_int
from .objectives import _plain

__all__ = ["History", "fit", "resolve_device"]


class History:
    """Epoch-averaged training curves: ``history["elbo"]`` is a list with one float per epoch.

    ``History({"elbo": [...], ...})`` starts from recorded curves; :func:`fit` builds one.

    Keys are those of :meth:`~vaebook.objectives.ELBOTerms.as_dict` (reconstruction, kl, elbo,
    objective), plus one entry per learned decoder log-variance, named as the parameter
    (``log_gamma`` for a :class:`~vaebook.nets.VAE`, ``stage2.log_gamma`` for the second
    stage of a ``vaebook.two_stage.TwoStageVAE``). For an ensemble
    of ``M`` models each entry is a numpy array ``(M,)`` instead of a float (one value per
    member), so ``np.stack(history["kl"])`` is an ``(epochs, M)`` array. ``history.terms``
    is the whole record as a dict of such lists.
    """

    def __init__(self, terms: dict[str, list] | None = None):
        # An ensemble's row is stored as a tuple of floats and handed out as a numpy array:
        # small arrays kept for the whole run would be malloc'd between the tensor buffers of
        # the next steps and fragment the heap (about 0.7 MB per epoch for a 12-member
        # full-batch run), while Python floats live in the interpreter's own arenas.
        self._rows: dict[str, list] = {}
        for key, values in (terms or {}).items():
            self._rows[key] = [_as_row(v) for v in values]

    @property
    def terms(self) -> dict[str, list]:
        return {key: self[key] for key in self._rows}

    def __getitem__(self, key: str) -> list:
        return [_as_value(v) for v in self._rows[key]]

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(next(iter(self._rows.values()), []))

    def final(self) -> dict:
        """The last epoch's value of every term."""
        return {key: _as_value(rows[-1]) for key, rows in self._rows.items()}

    def append(self, values: dict) -> None:
        """Record one epoch: ``values`` maps each term to a float or an ``(M,)`` array."""
        for key, value in values.items():
            self._rows.setdefault(key, []).append(_as_row(value))


def _as_row(value):
    """How a history entry is stored: a float as is, an ensemble's array as a tuple of floats."""
    return tuple(value.tolist()) if isinstance(value, np.ndarray) else value


def _as_value(stored):
    """A stored history entry as documented: a float, or a numpy array for an ensemble."""
    return np.array(stored) if isinstance(stored, tuple) else stored


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` means CUDA when available, else CPU; other values go to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or a torch.device, got {device!r}"
        ) from err


def fit(
    model: torch.nn.Module,
    data,
    *,
    epochs: int,
    batch_size: int | None = None,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = True,
    description: str | None = None,
    per_member: bool = False,
    callback: Callable[[int, torch.nn.Module], None] | None = None,
) -> History:
    """Train ``model`` on ``data`` by maximising its objective; return the :class:`History`.

    Parameters
    ----------
    model : module with a method ``terms(x, generator) -> ELBOTerms``, e.g. a
        :class:`~vaebook.nets.VAE`, or a ``vaebook.ensemble.EnsembleVAE`` (then every
        entry of the history is an array with one value per member). It is trained in place
        on ``device`` and moved back to the device it came from at the end, so the caller's
        tensors keep working with it; the loss is ``-terms.mean().objective.sum()``.
    data : tensor ``(n, ...)`` of training examples, or a tuple of tensors sharing the
        example axis, e.g. ``(x, u)`` for a :class:`~vaebook.ivae.IVAE`: each mini-batch
        takes the same rows of every tensor and calls ``model.terms(*batch, generator=...)``.
    epochs : int > 0, passes over the data.
    batch_size : examples per step; ``None`` means full-batch (one step per epoch).
    lr : Adam learning rate (torch's fused Adam kernel is used where available).
    seed : seeds the reparameterisation noise and the mini-batch order.
    device : ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.
    progress : show a ``tqdm.auto`` progress bar over epochs (for an ensemble it shows the
        members' average elbo and kl).
    description : label of the progress bar.
    per_member : ``data`` is ``(M, n, ...)``, one dataset per member of an ensemble of ``M``
        (e.g. ``EnsembleVAE``): mini-batches take the same example indices from every
        member's dataset. By default ``data`` is ``(n, ...)``, shared by every member.
    callback : called as ``callback(epoch, model)`` at the end of every epoch (e.g. to keep
        snapshots of reconstructions while γ falls), with the model still on ``device``;
        it must not change the model.

    Raises
    ------
    FloatingPointError
        when the objective becomes NaN or infinite (with the epoch at which it happened).
    """
    if not hasattr(model, "terms"):
        raise TypeError("model must have a terms(x, generator) method, e.g. vaebook.nets.VAE")
    tensors = _data_tensors(data, per_member)
    epochs = check_positive_int(epochs, "epochs")
    n = tensors[0].shape[1] if per_member else tensors[0].shape[0]
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    batch_size = n if batch_size is None else min(check_positive_int(batch_size, "batch_size"), n)
    lr = check_positive(lr, "lr")
    check_positive_int(seed, "seed", allow_zero=True)
    device = resolve_device(device)

    home = next(model.parameters()).device
    model.to(device)
    dtype = next(model.parameters()).dtype
    tensors = [t.to(device=device, dtype=dtype) for t in tensors]
    order_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=device).manual_seed(seed + 1)
    optimiser = _adam(model.parameters(), lr)
    history = History()
    bar = tqdm(range(epochs), desc=description, disable=not progress, leave=True)
    for epoch in bar:
        totals: dict[str, float] = {}
        perm = torch.randperm(n, generator=order_gen).to(device) if batch_size < n else None
        for start in range(0, n, batch_size):
            batch = perm[start : start + batch_size] if perm is not None else None
            if batch is None:
                xs = tensors
            else:
                xs = [t[:, batch] if per_member else t[batch] for t in tensors]
            terms = model.terms(*xs, generator=noise_gen).mean()
            loss = -terms.objective.sum()  # one model: a scalar already; an ensemble: (M,)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"the objective became {loss.item()} at epoch {epoch}; try a smaller lr"
                )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            weight = (xs[0].shape[1] if per_member else xs[0].shape[0]) / n
            for key, value in terms.as_dict().items():
                totals[key] = totals.get(key, 0.0) + weight * value
        for name, parameter in model.named_parameters():
            if name.split(".")[-1] == "log_gamma":  # learned decoder variances (Dai & Wipf)
                totals[name] = _plain(parameter)
        history.append(totals)
        if callback is not None:
            callback(epoch, model)
        bar.set_postfix(elbo=f"{np.mean(totals['elbo']):.2f}", kl=f"{np.mean(totals['kl']):.2f}")
    model.to(home)
    return history


def _data_tensors(data, per_member: bool) -> list[torch.Tensor]:
    """``data`` as a list of tensors with a common example axis (axis 1 when ``per_member``)."""
    if isinstance(data, (tuple, list)):
        if len(data) == 0:
            raise ValueError("data must be a tensor or a non-empty tuple of tensors")
        tensors = [as_tensor(t, f"data[{i}]") for i, t in enumerate(data)]
    else:
        tensors = [as_tensor(data, "data")]
    axis = 1 if per_member else 0
    for i, t in enumerate(tensors):
        name = "data" if len(tensors) == 1 else f"data[{i}]"
        if per_member and t.dim() < 3:
            raise ValueError(f"per_member {name} must be (M, n, ...), got shape {tuple(t.shape)}")
        if t.dim() < 2:
            raise ValueError(f"{name} must be a batch (n, ...), got shape {tuple(t.shape)}")
        if t.shape[axis] == 0:
            raise ValueError(f"{name} must hold at least one example, got shape {tuple(t.shape)}")
        if t.shape[axis] != tensors[0].shape[axis]:
            raise ValueError(
                f"{name} has {t.shape[axis]} examples but data[0] has {tensors[0].shape[axis]}"
            )
    return tensors


def _adam(parameters, lr: float) -> torch.optim.Adam:
    """Adam with its fused kernel (one pass over each parameter per step) where torch has it.

    The fused update is the same elementwise arithmetic as the default one (it may differ in
    the last bit); it is several times faster for the large stacked parameters of an ensemble
    and saves per-tensor overhead for small models. Older torch versions lack the CPU kernel,
    and then the default implementation is used.
    """
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(parameters, lr=lr)

"""The torch runtime's numpy-like namespace `rt.xp`: the names jax.numpy uses, with `axis=`, on torch."""
import torch


def _axis(kw):
    if "axis" in kw:
        kw["dim"] = kw.pop("axis")
    return kw


class Numpy:
    """A numpy-like face on torch: the names jax.numpy uses, with `axis=`."""

    def __init__(self, rt):
        self._rt = rt

    def __getattr__(self, name):
        fn = getattr(torch, name)
        return lambda *a, **kw: fn(*a, **_axis(kw))

    def asarray(self, x, dtype=None):
        return self._rt.asarray(x, dtype)

    def sum(self, x, axis=None, keepdims=False):
        return x.sum() if axis is None else x.sum(dim=axis, keepdim=keepdims)

    def mean(self, x, axis=None, keepdims=False):
        return x.mean() if axis is None else x.mean(dim=axis, keepdim=keepdims)

    def max(self, x, axis=None, keepdims=False):
        return x.max() if axis is None else x.amax(dim=axis, keepdim=keepdims)

    def min(self, x, axis=None, keepdims=False):
        return x.min() if axis is None else x.amin(dim=axis, keepdim=keepdims)

    def var(self, x, axis=None, keepdims=False, ddof=0):
        return x.var(unbiased=bool(ddof)) if axis is None else x.var(dim=axis, keepdim=keepdims, correction=ddof)

    def std(self, x, axis=None, keepdims=False, ddof=0):
        return self.var(x, axis, keepdims, ddof).sqrt()

    def logsumexp(self, x, axis=None, keepdims=False):
        if axis is None:
            return torch.logsumexp(x.reshape(-1), 0)
        return torch.logsumexp(x, dim=axis, keepdim=keepdims)

    def cumsum(self, x, axis=0):
        return torch.cumsum(x, dim=axis)

    def take(self, x, idx, axis=0):
        return torch.index_select(x, axis, idx)

    def where(self, c, a, b):
        return torch.where(c, torch.as_tensor(a, device=c.device), torch.as_tensor(b, device=c.device))

    def clip(self, x, lo=None, hi=None):
        return torch.clamp(x, lo, hi)

    def sort(self, x, axis=-1):
        return torch.sort(x, dim=axis).values

    def searchsorted(self, a, v, side="left"):
        return torch.searchsorted(a, v, right=(side == "right"))

    def zeros(self, shape, dtype=None):
        return torch.zeros(shape, dtype=dtype or self._rt.dtype, device=self._rt.device)

    def ones(self, shape, dtype=None):
        return torch.ones(shape, dtype=dtype or self._rt.dtype, device=self._rt.device)

    def full(self, shape, value, dtype=None):
        return torch.full(shape if isinstance(shape, tuple) else (shape,), value,
                          dtype=dtype or self._rt.dtype, device=self._rt.device)

    def arange(self, n, dtype=None):
        return torch.arange(n, device=self._rt.device, dtype=dtype)

    def concatenate(self, xs, axis=0):
        return torch.cat(list(xs), dim=axis)

    def stack(self, xs, axis=0):
        return torch.stack(list(xs), dim=axis)

    def einsum(self, spec, *xs):
        return torch.einsum(spec, *xs)

    def isfinite(self, x):
        return torch.isfinite(x)

    def square(self, x):
        return x * x

    def floor(self, x):
        return torch.floor(x)

    def all(self, x):
        return torch.all(x)

    def any(self, x):
        return torch.any(x)

    def minimum(self, a, b):
        return torch.minimum(torch.as_tensor(a), torch.as_tensor(b))

    def maximum(self, a, b):
        return torch.maximum(torch.as_tensor(a), torch.as_tensor(b))

    def index_add(self, x, idx, value):
        """x with value[j] added at x[idx[j]] (repeated indices accumulate)."""
        return x.index_add(0, idx, value)

    def cov(self, x):
        """Covariance of the rows of x [N, D] (numpy's `cov(x, rowvar=False)`)."""
        return torch.atleast_2d(torch.cov(x.T))

    linalg = torch.linalg

    def prod(self, x, axis=None):
        return x.prod() if axis is None else x.prod(dim=axis)

    def diag(self, x):
        """A diagonal matrix from a vector, or the diagonal of a matrix (batched under vmap)."""
        return torch.diag_embed(x) if x.ndim == 1 else torch.diagonal(x, dim1=-2, dim2=-1)

    def cholesky(self, x):
        """The lower Cholesky factor; NaN entries for a matrix that is not positive-definite (as JAX: one
        particle's proposal outside the domain does not stop a batch)."""
        factor, info = torch.linalg.cholesky_ex(x)
        return torch.where((info == 0)[..., None, None], factor, torch.nan)

    def solve_triangular(self, a, b, lower=False):
        vector = b.ndim == 1
        x = torch.linalg.solve_triangular(a, b[:, None] if vector else b, upper=not lower)
        return x[:, 0] if vector else x

    def solve(self, a, b):
        return torch.linalg.solve(a, b)

    def flip(self, x, axis):
        return torch.flip(x, (axis,))

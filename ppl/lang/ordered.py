"""The distribution of an `ordered[K]` (or `positive_ordered[K]`) site: K i.i.d. draws, sorted."""
from ..stdlib import distributions as D


class SortedIID(D.Distribution):
    """K iid draws of a scalar family, sorted: density K! Π_k p(x_k) on the ordered cone (normalized).

    Stan's `ordered[K] x; x ~ normal(0, 2)` has the same posterior (its density lacks the K!). `support`
    is 'ordered' or 'positive_ordered'; each runtime makes the distribution (`rt.sorted_distribution`).
    """

    def __init__(self, base, support):
        super().__init__(base.family, base.params, base.shape)
        self.base_family, self.support = base.family, support
        self.family = f"Sorted{base.family}"

    def _base(self):
        return D.Distribution(self.base_family, self.params, self.shape)

    def broadcast_params(self, rt):
        base = self._base()
        batch = tuple(base.lower(rt).batch_shape)
        return {k: rt.xp.broadcast_to(rt.asarray(v), batch) for k, v in self.params.items()}

    def lower(self, rt, params=None):
        return rt.sorted_distribution(self._base().lower(rt, params), self.support)

"""What a run returns: samples in constrained space, weights, log Z, diagnostics, ArviZ conversion.

Samples are stored per chain: `samples[name]` has shape [C, N, *site_shape], where a chain is an
independent run (SMC/IS) or an MCMC chain. `log_weights` [C, N] is None for unweighted draws.
"""
import warnings

import numpy as np

from .weights import Weights


def _weighted_quantile(x, w, q):
    order = np.argsort(x)
    cw = np.cumsum(w[order])
    return x[order][np.minimum(np.searchsorted(cw, q * cw[-1]), len(x) - 1)]


def component_label(name, at):
    """The label of component `at` (0-based indices) of site `name`, 1-based as the language indexes:
    `theta[1, 3]` for at = (0, 2); the bare name for a scalar (at = ())."""
    return f"{name}[{', '.join(str(i + 1) for i in at)}]" if len(at) else name


class LazySequences:
    """A run's sequences, flat over chains, decoded when first read: `one(i)` decodes sequence i, `every()` all of
    them at once (20,000 token lists take milliseconds to make, which a run read only for its answer and log Z
    need not pay). Indexing decodes one; iterating, all (once)."""

    def __init__(self, count, one, every):
        self.count, self.one, self.every, self.decoded = count, one, every, None

    def __len__(self):
        return self.count

    def __getitem__(self, i):
        if self.decoded is not None:
            return self.decoded[i]
        if not -self.count <= i < self.count:
            raise IndexError(f"sequence {i} of {self.count}")
        return self.one(i % self.count)

    def __iter__(self):
        return iter(self.list())

    def list(self):
        if self.decoded is None:
            self.decoded = self.every()
        return self.decoded


class Result:
    """Samples, weights and log Z of one run of `ppl.sample`."""

    def __init__(self, samples, log_weights=None, log_z=None, log_z_se=None, method="", runtime="", device="",
                 diagnostics=None, sample_stats=None, log_likelihood=None, predictive=None, observed=None,
                 sequences=None, answer=None, proposal=None, unconstrained=None):
        self.samples = {k: np.asarray(v) for k, v in samples.items()}
        #: pointwise log p(y_j | θ) per observed site [C, N, *shape] (for `az.loo` / `az.waic`), replicated
        #: observations y_rep ~ p(y | θ) [C, N, *shape], and the observed values, where the method gives them
        self.log_likelihood = {k: np.asarray(v) for k, v in (log_likelihood or {}).items()}
        self.predictive = {k: np.asarray(v) for k, v in (predictive or {}).items()}
        self.observed = {k: np.asarray(v) for k, v in (observed or {}).items()}
        #: sequence targets: the chosen answer (by the method's `select`); `sequences` below
        self._sequences, self.answer = sequences, answer
        #: the proposal the draws came from, where it is a fitted density (`ais`, or `is` with one as reference=)
        #: and the draws on its unconstrained space [C, N, D] (for control variates from its components)
        self.proposal, self.unconstrained = proposal, unconstrained
        self.log_weights = None if log_weights is None else np.asarray(log_weights, dtype=np.float64)
        self.log_z = None if log_z is None else float(log_z)
        self.log_z_se = None if log_z_se is None else float(log_z_se)
        self.method, self.runtime, self.device = method, runtime, device
        self.diagnostics = dict(diagnostics or {})
        self.sample_stats = dict(sample_stats or {})
        self.wall_time = None
        self.seed = None

    @property
    def sequences(self):
        """Sequence targets: the generated sequences, chain after chain (token lists, or text with a decoder);
        decoded when first read."""
        if isinstance(self._sequences, LazySequences):
            self._sequences = self._sequences.list()
        return self._sequences

    @property
    def weights(self):
        """Normalized weights [C, N] (uniform for unweighted draws)."""
        if self.log_weights is None:
            c, n = next(iter(self.samples.values())).shape[:2]
            return np.full((c, n), 1.0 / n)
        return Weights(self.log_weights).normalized()

    @property
    def ess(self):
        """Kish effective sample size, summed over chains (weighted runs)."""
        return None if self.log_weights is None else float(Weights(self.log_weights).ess().sum())

    def _pooled(self, name):
        """The draws of `name` over all chains [C · N, ...] and their weights, the chains weighing equally."""
        x = self.samples[name]
        if self.log_weights is None:
            c, n = x.shape[:2]
            w = np.full(c * n, 1.0 / (c * n))
        else:
            w = Weights(self.log_weights).pooled().normalized()
        return x.reshape((-1,) + x.shape[2:]), w

    def _resampled(self):
        """Indices [C, N] of equally weighted draws per chain: the registered systematic resampler on this run's
        runtime, keyed by its seed."""
        from .backends.runtime import DEFAULT, KNOWN, get_runtime
        from .stdlib.resamplers import RESAMPLERS
        rt = get_runtime(self.runtime if self.runtime in KNOWN else DEFAULT)
        weights = self.weights
        keys = rt.split(rt.key(0 if self.seed is None else self.seed), len(weights))
        return np.stack([rt.to_numpy(RESAMPLERS["systematic"](rt, k, rt.asarray(w))) for k, w in zip(keys, weights)])

    def mean(self, name):
        x, w = self._pooled(name)
        return np.tensordot(w, x, axes=(0, 0))

    def var(self, name):
        x, w = self._pooled(name)
        m = np.tensordot(w, x, axes=(0, 0))
        return np.tensordot(w, (x - m) ** 2, axes=(0, 0))

    def std(self, name):
        return np.sqrt(self.var(name))

    #: the columns of `summary()` for MCMC draws, and for weighted runs (IS, SMC, FKC, ...: one ESS, Kish's,
    #: and R-hat only across several runs)
    SUMMARY_COLUMNS = ("mean", "sd", "mcse_mean", "5%", "95%", "ess_bulk", "ess_tail", "r_hat")
    WEIGHTED_COLUMNS = ("mean", "sd", "mcse_mean", "5%", "95%", "ess", "r_hat")

    def summary(self, var_names=None):
        """One table (pandas DataFrame), a row per scalar component: weighted mean, sd, MCSE of the mean, 5% and
        95% quantiles, ESS and R-hat. Rows are labelled 1-based as in the language (`theta[1]` is
        `samples["theta"][..., 0]`).

        MCMC draws (`SUMMARY_COLUMNS`): bulk and tail ESS, MCSE and rank-normalized R-hat from ArviZ. Weighted
        runs (`WEIGHTED_COLUMNS`): `ess` is the Kish ESS (Σw)²/Σw² summed over runs (one number for every
        component, which is all the weights say), MCSE = sd / √ESS, and `r_hat` is ArviZ's across independent
        runs (their resampled draws), a column only when there are several."""
        import arviz as az
        import pandas as pd
        names = list(var_names or self.samples)
        chains = next(iter(self.samples.values())).shape[0]
        weighted = self.log_weights is not None
        stats = None
        if not weighted or chains > 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # constant components give NaN R-hat
                stats = az.summary(self.to_arviz(), var_names=names, kind="diagnostics", round_to="none")
        rows, index = [], []
        for name in names:
            x, w = self._pooled(name)
            flat = x.reshape(len(x), -1)
            for j in range(flat.shape[1]):
                at = np.unravel_index(j, x.shape[1:])
                key = name if x.ndim == 1 else f"{name}[{', '.join(map(str, at))}]"   # ArviZ's, 0-based
                col = flat[:, j]
                m = float(np.dot(w, col))
                sd = float(np.sqrt(np.dot(w, (col - m) ** 2)))
                row = {"mean": m, "sd": sd, "5%": float(_weighted_quantile(col, w, 0.05)),
                       "95%": float(_weighted_quantile(col, w, 0.95))}
                if weighted:
                    row.update(ess=self.ess, mcse_mean=sd / np.sqrt(self.ess))
                else:
                    row.update({k: float(stats.loc[key, k]) for k in ("mcse_mean", "ess_bulk", "ess_tail")})
                if stats is not None:
                    row["r_hat"] = float(stats.loc[key, "r_hat"])
                rows.append(row)
                index.append(component_label(name, at))
        columns = self.WEIGHTED_COLUMNS if weighted else self.SUMMARY_COLUMNS
        return pd.DataFrame(rows, index=index, columns=[c for c in columns if stats is not None or c != "r_hat"])

    def to_arviz(self):
        """InferenceData: equally weighted draws per chain (weighted runs are resampled systematically),
        `log_marginal_likelihood` per chain and per-step diagnostics in `sample_stats`; where the method gives
        them, `log_likelihood` (so `az.loo(result.to_arviz())` works), `posterior_predictive` and
        `observed_data`."""
        import arviz as az
        groups = {"posterior": self.samples, "log_likelihood": self.log_likelihood,
                  "posterior_predictive": self.predictive}
        if self.log_weights is not None:
            idx = self._resampled()
            groups = {g: {k: np.stack([v[c][idx[c]] for c in range(v.shape[0])]) for k, v in arrays.items()}
                      for g, arrays in groups.items()}
        posterior = groups["posterior"]
        stats = dict(self.sample_stats)
        attrs = {"method": self.method, "runtime": self.runtime, "device": str(self.device)}
        if self.log_z is not None:
            per_chain = self.diagnostics.get("log_z_per_chain", [self.log_z] * next(iter(posterior.values())).shape[0])
            stats["log_marginal_likelihood"] = np.asarray(per_chain, dtype=float).reshape(-1, 1)
        with warnings.catch_warnings():  # per-run statistics have one "draw": ArviZ's shape heuristic warns
            warnings.filterwarnings("ignore", message="More chains")
            return az.from_dict(posterior=posterior, sample_stats=stats or None, attrs=attrs,
                                log_likelihood=groups["log_likelihood"] or None,
                                posterior_predictive=groups["posterior_predictive"] or None,
                                observed_data=self.observed or None)

    def expect(self, functions):
        """E[f] for every f in `functions` ({name: f(site, ...)}) from these draws: an `Expectations` table
        (self-normalized estimates with delta-method errors for weighted draws, ArviZ ESS for MCMC chains;
        a mixture proposal's components as control variates, see `ppl.expect`)."""
        from .expect import expect_draws
        return expect_draws(self, functions)

    def plot(self, path=None, var_names=None):
        """Marginal densities and pairwise scatter of `var_names` plus per-method panels (see `ppl.plots`)."""
        from .plots import plot
        return plot(self, path, var_names)

    def save(self, path):
        """Write this result to NetCDF at `path`; `ppl.load(path)` reads it back (see `ppl.io`)."""
        from .io import save
        return save(self, path)

    def __repr__(self):
        parts = [f"Result(method={self.method!r}, runtime={self.runtime!r}, device={self.device!r}"]
        if self.log_z is not None:
            parts.append(f"log_z={self.log_z:.4f}" + (f" ± {self.log_z_se:.4f}" if self.log_z_se is not None else ""))
        if self.ess is not None:
            parts.append(f"ess={self.ess:.1f}")
        return ", ".join(parts) + ")"

"""Figures of a `Result` (matplotlib, Agg canvas; no pyplot state is touched).

The top block is a corner plot of the chosen scalar components: marginal densities on
the diagonal (ArviZ KDE) and pairwise scatter below it, drawn from `result.to_arviz()`
(equally weighted draws; weighted runs are resampled). A bottom row adds, where the run
has them: SMC's β schedule and ESS per step, FKC's ESS along diffusion time, the importance
weights' distribution (IS and any other weighted run without a schedule), and the MCMC
energy plot (E-BFMI).
"""
import numpy as np

MAX_COMPONENTS = 6
MAX_POINTS = 2000


def _components(posterior, var_names):
    """[(label, draws [C*S])] for the scalar components of the chosen sites, at most MAX_COMPONENTS; labels
    1-based as the summary's (`theta[1]`)."""
    from .errors import NameResolutionError
    from .result import component_label
    names = list(posterior.data_vars) if var_names is None else list(var_names)
    missing = [n for n in names if n not in posterior.data_vars]
    if missing:
        raise NameResolutionError(f"cannot plot {', '.join(missing)}: the result has sites "
                                  f"{', '.join(posterior.data_vars)}")
    out = []
    for name in names:
        x = posterior[name].values
        flat = x.reshape(x.shape[0] * x.shape[1], -1)
        for j in range(flat.shape[1]):
            idx = np.unravel_index(j, x.shape[2:])
            out.append((component_label(name, idx), flat[:, j]))
    return out[:MAX_COMPONENTS]


def _schedule(diagnostics, key):
    """Per-run rows of an SMC per-step diagnostic ('beta'/'betas', 'ess'), or None."""
    for k in (key, key + "s"):
        if k in diagnostics:
            v = diagnostics[k]
            rows = v if isinstance(v, (list, tuple)) and len(v) and np.ndim(v[0]) == 1 else [v]
            return [np.asarray(r, dtype=float) for r in rows]
    return None


def _panels(result):
    """The bottom-row panels: functions drawing on an axis."""
    import arviz as az
    panels = []
    betas, ess = _schedule(result.diagnostics, "beta"), _schedule(result.diagnostics, "ess")
    if betas is not None:
        def beta_panel(ax):
            for b in betas:
                ax.plot(np.arange(len(b)), b, marker=".")
            ax.set(xlabel="step", ylabel="β", title="tempering schedule")
        panels.append(beta_panel)
        if ess is not None:
            def ess_panel(ax):
                for e in ess:
                    ax.plot(np.arange(1, len(e) + 1), e, marker=".")
                ax.set(xlabel="step", ylabel="ESS", title="ESS per step")
            panels.append(ess_panel)
    elif ess is not None and "t" in result.diagnostics:   # FKC: one ESS per step of the reverse SDE
        def ess_time_panel(ax):
            ax.plot(result.diagnostics["t"], ess[0])
            ax.invert_xaxis()
            ax.set(xlabel="diffusion time t (from T to 0)", ylabel="ESS", title="ESS along the reverse SDE")
        panels.append(ess_time_panel)
    elif result.log_weights is not None:
        def weight_panel(ax):
            w = result.weights.reshape(-1) * result.weights.shape[-1]
            w = w[w > 0]
            ax.hist(np.log10(w), bins=50)
            ax.set(xlabel="log10(N · normalized weight)", ylabel="count",
                   title=f"importance weights (ESS {result.ess:.0f})")
        panels.append(weight_panel)
    if "energy" in result.sample_stats:
        panels.append(lambda ax: az.plot_energy(result.to_arviz(), ax=ax, legend=True))
    return panels


def plot(result, path=None, var_names=None):
    """A figure of `result` (corner plot + method panels); saved to `path` when given. Returns the Figure."""
    import arviz as az
    from matplotlib.figure import Figure

    comps = _components(result.to_arviz().posterior, var_names)
    panels = _panels(result)
    k = len(comps)
    fig = Figure(figsize=(max(2.4 * k, 3.2 * len(panels), 4.0), 2.4 * k + (2.8 if panels else 0)),
                 layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[2.4 * k, 2.8]) if panels else (fig, None)
    axes = np.atleast_2d(top.subplots(k, k, squeeze=False))
    rng = np.random.default_rng(0)
    for i, (label_i, xi) in enumerate(comps):
        for j, (label_j, xj) in enumerate(comps):
            ax = axes[i, j]
            if j > i:
                ax.set_axis_off()
                continue
            if i == j:
                az.plot_kde(xi, ax=ax)
                ax.set_yticks([])
            else:
                pick = rng.choice(len(xi), size=min(len(xi), MAX_POINTS), replace=False)
                ax.scatter(xj[pick], xi[pick], s=2, alpha=0.3)
            if i == k - 1:
                ax.set_xlabel(label_j)
            if j == 0 and i > 0:
                ax.set_ylabel(label_i)
        if k == 1:
            axes[0, 0].set_xlabel(label_i)
    top.suptitle(f"{result.method} on {result.runtime}" + (f", log Z = {result.log_z:.3f}"
                                                           if result.log_z is not None else ""))
    if panels:
        for draw, ax in zip(panels, np.atleast_1d(bottom.subplots(1, len(panels), squeeze=False)[0])):
            draw(ax)
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig

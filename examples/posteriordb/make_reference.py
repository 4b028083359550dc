"""Copies the posteriordb data of the programs in this folder and summarizes their reference posteriors.

    python examples/posteriordb/make_reference.py GIT_DIR

GIT_DIR is a clone (bare or not) of github.com/stan-dev/posteriordb. Writes `<name>.data.json` here and
`tests/data/posteriordb/<name>.summary.json`: per parameter the mean, the sd, the Monte Carlo standard error of
the mean, mcse_mean = sd / sqrt(ESS) (ArviZ's bulk ESS over the reference chains), and the 5, 25, 50, 75 and 95%
quantiles. The draws themselves are not kept. Where the repository holds no draws (a file too large for the
snapshot), the summary comes from posteriordb's summary statistics of the same draws: their mean and its MCSE,
and the mean of squares (sd = sqrt(E[x^2] - E[x]^2)), without quantiles.
"""
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SUMMARIES = HERE.parents[1] / "tests" / "data" / "posteriordb"
DB = "posterior_database"
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)

#: program name -> posteriordb posterior
POSTERIORS = {
    "lotka_volterra": "hudson_lynx_hare-lotka_volterra",
    "accel_gp": "mcycle_gp-accel_gp",
    "gp_regr": "gp_pois_regr-gp_regr",
    "nes": "nes1972-nes",
    "logearn_interaction_z": "earnings-logearn_interaction_z",
    "one_comp_mm_elim_abs": "one_comp_mm_elim_abs-one_comp_mm_elim_abs",
}
#: programs whose reference summary is kept in ../shared/reference/posteriordb instead (only their data is copied)
SHARED = {"one_comp_mm_elim_abs"}


def show(git_dir, path):
    """The bytes of `path` at HEAD, or None where the snapshot lacks it."""
    out = subprocess.run(["git", "--git-dir", str(git_dir), "show", f"HEAD:{path}"], capture_output=True)
    return out.stdout if out.returncode == 0 and out.stdout else None


def unzip_json(blob):
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        return json.loads(z.read(z.namelist()[0]))


def from_draws(chains):
    """{param: summary} of posteriordb draws (a list over chains of {param: [draws]})."""
    import arviz as az
    out = {}
    for p in chains[0]:
        x = np.array([c[p] for c in chains], dtype=float)        # [chains, draws]
        ess = float(az.ess(x, method="bulk"))
        q = np.quantile(x, QUANTILES)
        out[p] = {"mean": x.mean(), "sd": x.std(ddof=1), "mcse_mean": x.std(ddof=1) / np.sqrt(ess),
                  "ess_bulk": ess, "quantiles": {f"{p:g}": v for p, v in zip(QUANTILES, q)}}
    return out


def from_statistics(git_dir, posterior):
    """{param: summary} from posteriordb's mean_value and mean_squared_value statistics of the reference draws."""
    stats = f"{DB}/reference_posteriors/summary_statistics"
    mean = json.loads(show(git_dir, f"{stats}/mean_value/mean_value/{posterior}.json"))
    square = json.loads(show(git_dir, f"{stats}/mean_squared_value/mean_squared_value/{posterior}.json"))
    assert mean["names"] == square["names"]
    return {p: {"mean": m, "sd": float(np.sqrt(m2 - m * m)), "mcse_mean": se}
            for p, m, se, m2 in zip(mean["names"], mean["mean_value"], mean["mcse_mean"],
                                    square["mean_squared_value"])}


def main(git_dir):
    commit = subprocess.run(["git", "--git-dir", str(git_dir), "rev-parse", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    SUMMARIES.mkdir(parents=True, exist_ok=True)
    for name, posterior in POSTERIORS.items():
        meta = json.loads(show(git_dir, f"{DB}/posteriors/{posterior}.json"))
        data = unzip_json(show(git_dir, f"{DB}/data/data/{meta['data_name']}.json.zip"))
        (HERE / f"{name}.data.json").write_text(json.dumps(data) + "\n")
        if name in SHARED:
            continue
        info = json.loads(show(git_dir, f"{DB}/reference_posteriors/draws/info/{posterior}.info.json"))
        draws = show(git_dir, f"{DB}/reference_posteriors/draws/draws/{posterior}.json.zip")
        params = from_draws(unzip_json(draws)) if draws else from_statistics(git_dir, posterior)
        summary = {"posterior": posterior, "source": f"stan-dev/posteriordb @ {commit}",
                   "from": "reference draws" if draws else "summary statistics of the reference draws",
                   "n_chains": info["diagnostics"]["nchains"], "n_draws_total": info["diagnostics"]["ndraws"],
                   "parameters": params}
        text = json.dumps(summary, indent=1, default=float)
        (SUMMARIES / f"{name}.summary.json").write_text(text + "\n")
        print(f"{name}: {len(params)} parameters ({summary['from']})")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

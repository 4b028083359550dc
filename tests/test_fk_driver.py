"""The core's driver (`backends/fk.py`): `fk.scan`, a known number of steps in the graph, and `fk.run`, the loop
on the host (stop rule, step budget, the model's move on the host, each step's record read back and checked with
the method's hooks), on a model whose potentials are a given table: log Z is known exactly."""
import math

import numpy as np
import pytest

from ppl.backends import fk, get_runtime
from ppl.errors import InferenceError

N = 4
#: log G_t(x_i) at the steps t = 0, 1, 2 (rows), particle i (columns); the model never resamples, so
#: log Z = log mean_i exp(Σ_t log G_t(x_i)) exactly
TABLE = np.array([[0.0, -1.0, 1.0, 0.5], [2.0, 2.0, -0.5, 0.0], [-3.0, 0.0, 0.0, 1.0]])


def exact_log_z(rows):
    return math.log(np.mean(np.exp(np.sum(rows, axis=0))))


class Table(fk.FeynmanKac):
    """Particle i is (i, the number of moves made); log G_t = TABLE[t, i] (any other entries where given); the move
    adds one to the count."""

    def __init__(self, rt, table=TABLE):
        self.rt, self.table = rt, rt.asarray(np.asarray(table, dtype=np.float32))

    def init(self, key, n):
        return (self.rt.asindex(np.arange(n)), self.rt.asarray(np.zeros(n, dtype=np.float32))), None

    def log_potential(self, t, p, log_w, carry):
        return self.rt.xp.take(self.table[t], p[0], axis=0), p, carry

    def move(self, key, t, p, log_w, carry):
        return (p[0], p[1] + 1.0), carry, None, None

    def can_resample(self, t, particles=None):
        return t < 0      # never: the particles keep their rows


@pytest.fixture(params=["numpyro", "pyro"])
def rt(request):
    return get_runtime(request.param)


def test_scan_is_the_steps_then_a_closing_one(rt):
    model = Table(rt)
    step = fk.make_step(model, error_every_step=False)
    sweep = rt.jit(lambda s, keys, last: fk.scan(rt, step, s, keys, last))      # one compile
    state, info = sweep(fk.init(model, rt.key(0), N), rt.split(rt.key(1), 2), rt.key(2))
    host = fk.to_host(rt, info)
    assert host.log_c.shape == (3,) and host.ess.shape == (3,) and isinstance(host.rel_var, float)
    assert float(rt.to_numpy(state.log_z)) == pytest.approx(exact_log_z(TABLE), abs=1e-5)
    assert np.allclose(rt.to_numpy(state.particles[1]), 2.0)    # two moves, none after the closing step
    _, only = fk.scan(rt, step, fk.init(model, rt.key(0), N), None, rt.key(2))       # no scanned steps
    assert fk.to_host(rt, only).log_c == pytest.approx([exact_log_z(TABLE[:1])], abs=1e-5)


def test_run_stops_moves_and_reports(rt):
    model = Table(rt)
    step = rt.jit(lambda k, s: fk.make_step(model)(k, s, move=False))
    seen = []
    state, infos = fk.run(rt, step, fk.init(model, rt.key(0), N), fk.chained_keys(rt, rt.key(1)),
                          until=lambda info: len(seen) == 3, on_step=lambda t, info, bar: seen.append(t),
                          move=lambda k, s: s._replace(particles=model.move(k, s.t, s.particles, s.log_w, None)[0]))
    assert seen == [1, 2, 3] and len(infos) == 3 and isinstance(infos[0].log_c, float)
    assert sum(i.log_c for i in infos) == pytest.approx(exact_log_z(TABLE), abs=1e-5)
    assert np.allclose(rt.to_numpy(state.particles[1]), 2.0)    # moved after steps 1 and 2, not after the last


def test_run_budget_and_hooks(rt):
    gone = Table(rt, np.where(np.arange(3)[:, None] == 1, -np.inf, TABLE))       # every weight vanishes at t = 1
    step = rt.jit(fk.make_step(gone))
    keys = rt.split(rt.key(1), 3)
    with pytest.raises(InferenceError, match="1 steps, t = 1"):
        fk.run(rt, step, fk.init(gone, rt.key(0), N), keys, max_steps=1,
               exhausted=lambda t, s: InferenceError(f"{t} steps, t = {int(rt.to_numpy(s.t))}"))
    with pytest.raises(InferenceError, match="every weight vanished at step 2"):     # the host loop counts from 1
        fk.run(rt, step, fk.init(gone, rt.key(0), N), keys)
    told = []
    with pytest.raises(InferenceError, match="at 2 from t = 1"):
        fk.run(rt, step, fk.init(gone, rt.key(0), N), keys, vanished=lambda t, info, before: told.append(info) or
               InferenceError(f"at {t} from t = {int(rt.to_numpy(before.t))}"))
    assert told[0].non_finite == N
    _, infos = fk.run(rt, step, fk.init(gone, rt.key(0), N), keys, vanished=lambda *_: None)   # not an error here
    assert len(infos) == 3


def test_check_names_the_first_failing_step():
    info = fk.StepInfo(np.array([0.1, -np.inf, np.nan]), None, None, None, None, None, None, None,
                       np.array([0, 0, 2]))
    with pytest.raises(InferenceError, match="NaN or \\+inf at step 12"):
        fk.check(info, 10)
    with pytest.raises(InferenceError, match="vanished at step 11"):
        fk.check(info, 10, invalid=lambda *_: None)
    with pytest.raises(ValueError, match="2 bad at 2"):
        fk.check(info, invalid=lambda t, info, _: ValueError(f"{info.invalid[t]} bad at {t}"))
    fk.check(info._replace(log_c=np.zeros(3), invalid=None))

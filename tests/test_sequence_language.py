"""Sequence targets in `.ppl` (issue 30): `sequence NAME = markov / ngram / autoregressive(...)` lower to
`ppl.autoregressive` bases (the tables of `ppl.stdlib.sequence_tables`), rewards over `tokens` to batched
(prefixes, lengths) functions, the algebra to the Python API's targets; a steering program's log Z matches exact
enumeration over all sequences on both runtimes; `ppl check` / `ppl run` / `--out` and `ppl.load`; every error
located. Small V and lengths: the samplers' accuracy is tests/test_sequences.py's subject."""
import itertools
import os
import sys
import textwrap

import numpy as np
import pytest
from scipy.special import logsumexp

import ppl
from ppl import load_ppl
from ppl.cli import main
from ppl.sequence import SequenceModel
from ppl.stdlib import sequence_tables as st

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
STEERING, STEERING_DATA = (os.path.join(EXAMPLES, f) for f in ("steering.ppl", "steering.data.json"))
V, L = 3, 5
TABLE = np.array([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4], [0.1, 0.1, 0.8]])   # [V + 1, V]
TABLE3 = np.random.default_rng(3).dirichlet(np.ones(V), size=(V + 1, V + 1))         # [V + 1, V + 1, V]
DATA = {"table": TABLE.tolist(), "table3": TABLE3.tolist()}

PROGRAM = """
data table : real[4, 3]
data table3 : real[4, 4, 3]
sequence lm = markov(table, length = 5, eos = 3)
sequence tri = ngram(table3, length = 5, eos = 3, prompt = [2])
sequence lm2 = markov(table, length = 5, eos = 3)
target steered = lm * exp((count(tokens, 1) + 2 * ends_with(tokens, [2, 3]) - (length(tokens) > 3)) / 0.5)
target hot = lm ^ 2
target both = lm * lm2
target guided = geometric(lm, lm2, 1.5)
target steered3 = tri * exp(contains(tokens, [1, 1]) / 0.5)
sample steered with pf(particles = 2000, resample_threshold = 0.5)
"""


def reward(tokens):
    """The reward of `steered` on one sequence (0-based ids)."""
    ends = len(tokens) >= 2 and tokens[-2:] == (1, 2)
    return tokens.count(0) + 2.0 * ends - (len(tokens) > 3)


def sequences(eos):
    """Every complete sequence over V tokens: up to its first eos, or L tokens without one."""
    return sorted({x[:x.index(eos) + 1] if eos in x else x for x in itertools.product(range(V), repeat=L)})


def exact_log_z(model, fn, lam, eos=2):
    return logsumexp([model.log_prob(x) + fn(x) / lam for x in sequences(eos)])


def test_declarations_are_the_python_bases():
    prog = load_ppl(PROGRAM, data=DATA)
    lm, tri = prog.sequences["lm"], prog.sequences["tri"]
    assert isinstance(lm, SequenceModel) and lm.name == "lm" and isinstance(lm.next_logprobs, st.NGram)
    assert (lm.vocab, lm.length, lm.eos, lm.prompt, lm.delimiters) == (3, 5, 2, (), None)   # eos = 3 is id 2
    assert lm.next_logprobs.order == 2 and tri.next_logprobs.order == 3 and tri.prompt == (1,)
    np.testing.assert_allclose(np.exp(lm.next_logprobs.log_table), TABLE, rtol=1e-6)
    assert prog.kind("steered") == "sequence"
    lm2 = prog.sequences["lm2"]
    assert prog.targets["hot"].describe() == (lm ** 2).describe()
    assert prog.targets["both"].describe() == (lm * lm2).describe()
    assert prog.targets["guided"].describe() == ppl.geometric(lm, lm2, 1.5).describe()
    plan = str(prog.compile("guided"))
    assert "-0.5 x log lm" in plan and "+1.5 x log lm2" in plan
    plan = str(prog.compile("steered"))
    assert "+2 x reward count(tokens, 1) + 2 * ends_with(tokens, [2, 3]) - (length(tokens) > 3)" in plan, plan


def test_tables_are_stateful_models():
    """markov(table) and ngram: start/advance give the table's rows for the context (prompt included), the state
    [N, k − 1] holds 1 + the last tokens; log_prob agrees with the rows."""
    torch = pytest.importorskip("torch")
    m = st.NGram(TABLE3, prompt=[1]).bind("pyro")
    lp, state = m.start(2)
    assert state.tolist() == [[0, 2], [0, 2]]
    np.testing.assert_allclose(lp.exp().numpy(), np.stack([TABLE3[0, 2]] * 2), rtol=1e-5)
    lp, state = m.advance(torch.tensor([0, 2]), state)
    assert state.tolist() == [[2, 1], [2, 3]]
    np.testing.assert_allclose(lp.exp().numpy(), np.stack([TABLE3[2, 1], TABLE3[2, 3]]), rtol=1e-5)
    assert np.isclose(m.log_prob((0, 2)), np.log(TABLE3[0, 2, 0] * TABLE3[2, 1, 2]))
    one = st.NGram([0.2, 0.8]).bind("pyro")
    assert one.order == 1 and one.start(3)[0].shape == (3, 2)


def test_tables_and_rewards_trace_under_jax():
    """The tables' start/advance inside `lax.scan` under `jit`, and a lowered reward under `jit`: pure array code."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    m = st.NGram(TABLE3, prompt=[1]).bind("numpyro")

    def generate(key):
        def body(carry, k):
            lp, state = carry
            tok = jax.random.categorical(k, lp)
            return m.advance(tok, state), tok
        return jax.lax.scan(body, m.start(4), jax.random.split(key, L))[1].T
    tokens = jax.jit(generate)(jax.random.PRNGKey(0))
    assert tokens.shape == (4, L) and int(tokens.min()) >= 0 and int(tokens.max()) < V
    r = load_ppl(PROGRAM, data=DATA).targets["steered"].functions()[0]
    assert r.parents == ("prefixes", "lengths")
    prefixes = jnp.array([[0, 0, 1, 2], [2, 0, 1, 2], [2, 2, 2, 0]])     # left-padded with pad = eos = id 2
    lengths = jnp.array([4, 2, 1])
    want = [reward((0, 0, 1, 2)), reward((1, 2)), reward((0,))]
    np.testing.assert_allclose(jax.jit(r.fn)(prefixes, lengths), want)
    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(r.fn(torch.tensor(np.asarray(prefixes)), torch.tensor(np.asarray(lengths))), want)


REWARDS = [
    ("count(tokens, 2)", lambda x: x.count(1)),
    ("count(tokens, [1, 1])", lambda x: sum(x[i:i + 2] == (0, 0) for i in range(len(x) - 1))),
    ("contains(tokens, [2, 1]) + starts_with(tokens, 1)", lambda x: ((1, 0) in zip(x, x[1:])) + (x[:1] == (0,))),
    ("ends_with(tokens, 3) * length(tokens) ^ 2", lambda x: (x[-1:] == (2,)) * len(x) ** 2),
    ("maximum(count(tokens, 1), 2) - (not contains(tokens, 2) or length(tokens) >= 4)",
     lambda x: max(x.count(0), 2) - ((1 not in x) or len(x) >= 4)),
    ("where(count(tokens, 3) == 0, exp(1), -k)", lambda x: np.e if 2 not in x else -2.0),
]


@pytest.mark.parametrize("text, fn", REWARDS, ids=[t for t, _ in REWARDS])
def test_reward_builtins_mask_the_padding(text, fn):
    """Every built-in against its Python meaning on all prefixes up to length 4, padded with a real token."""
    torch = pytest.importorskip("torch")
    prog = load_ppl(f"data t : real[4, 3]\ndata k : int\nsequence lm = markov(t, length = 4)\n"
                    f"target s = lm * exp({text})\n", data={"t": TABLE.tolist(), "k": 2})
    r = prog.targets["s"].functions()[0]
    prefixes = [x for n in range(5) for x in itertools.product(range(V), repeat=n)]
    for pad in range(V):
        padded = torch.tensor([[pad] * (4 - len(x)) + list(x) for x in prefixes])
        got = r.fn(padded, torch.tensor([len(x) for x in prefixes]))
        np.testing.assert_allclose(got.numpy(), [fn(x) for x in prefixes], rtol=1e-6, err_msg=f"pad {pad}")


@pytest.mark.parametrize("runtime", ["numpyro", "pyro"])
def test_rewards_of_builtins_are_kept_running(runtime):
    """A reward of built-ins only is kept token by token (`TokenPattern.update`): each sequence's final reward
    equals its Python meaning, with eos, with chunked steps, with particle Gibbs' forced reference, and on the
    eager path (compile=False). The reward is the six of REWARDS at scales 1, 10, ..., 10^5 (one compile per
    setting), so a wrong built-in cannot hide behind another."""
    text = " + ".join(f"{10 ** i} * ({t})" for i, (t, _) in enumerate(REWARDS))

    def fn(x):
        return sum(10 ** i * f(x) for i, (_, f) in enumerate(REWARDS))
    for options, method in [("eos = 3", {}), ("eos = 3, step = 2", {}), ("eos = 3", {"method": "pg", "iterations": 2}),
                            ("", {"compile": False})]:
        prog = load_ppl(f"data t : real[4, 3]\ndata k : int\nsequence lm = markov(t, length = 4{', ' * bool(options)}"
                        f"{options})\ntarget s = lm * exp({text})\n", data={"t": TABLE.tolist(), "k": 2})
        assert prog.targets["s"].functions()[0].fn.running is not None
        r = prog.sample("s", **{"method": "pf", **method}, runtime=runtime, particles=16, seed=3)
        want = [fn(tuple(x)) for x in r.sequences]
        np.testing.assert_allclose(r.diagnostics["rewards"].reshape(-1), want, rtol=1e-6, err_msg=options)


def test_token_pattern_in_python():
    """`ppl.TokenPattern` tilts a Python base as the built-in does (the same running rewards), and names a bad
    kind or pattern."""
    fn = ppl.TokenPattern("contains", (1, 0))
    assert fn.__name__ == "contains[1, 0]" and fn.running.leaves == (fn,)
    r = ppl.sample(st.markov(TABLE, 4, eos=2).tilt(fn, 0.5), method="pf", runtime="pyro", particles=32, seed=1)
    want = [2.0 * ((1, 0) in zip(x, x[1:])) for x in r.sequences]     # R = r / λ
    np.testing.assert_allclose(r.diagnostics["rewards"].reshape(-1), want)
    with pytest.raises(ppl.ValueRangeError, match="unknown token reward 'counts'"):
        ppl.TokenPattern("counts", 0)
    with pytest.raises(ppl.ValueRangeError, match="takes a pattern"):
        ppl.TokenPattern("count")
    with pytest.raises(ppl.ValueRangeError, match="takes no pattern"):
        ppl.TokenPattern("length", 1)


@pytest.mark.parametrize("runtime", ["numpyro", "pyro"])
def test_steering_log_z_matches_enumeration(runtime):
    """pf on a markov chain tilted by a built-in reward: log Z within 4 reported SE of the exact sum over all
    sequences (each ends at its first eos or after L tokens)."""
    prog = load_ppl(PROGRAM, data=DATA)
    r = prog.sample("steered", runtime=runtime, seed=0)
    exact = exact_log_z(prog.sequences["lm"].next_logprobs, reward, 0.5)
    assert r.method == "pf" and r.runtime == runtime and len(r.sequences) == 2000
    assert r.diagnostics.get("compiled") is not False        # tables and rewards are pure: one compiled sweep
    assert abs(r.log_z - exact) < 4 * r.log_z_se, (r.log_z, r.log_z_se, exact)
    assert r.log_z_se < 0.1


def test_ngram_with_prompt_matches_enumeration():
    prog = load_ppl(PROGRAM, data=DATA)
    r = prog.sample("steered3", method="pf", runtime="pyro", particles=2000, seed=1)
    exact = exact_log_z(prog.sequences["tri"].next_logprobs, lambda x: float((0, 0) in zip(x, x[1:])), 0.5)
    assert abs(r.log_z - exact) < 4 * r.log_z_se, (r.log_z, r.log_z_se, exact)


def test_same_result_as_the_python_api():
    prog = load_ppl(PROGRAM, data=DATA)
    lm = st.markov(TABLE, 5, eos=2)
    python = lm.tilt(lambda p, n: st.count(p, n, 0) + 2 * st.ends_with(p, n, (1, 2)) - 1.0 * (n > 3), 0.5)
    r = prog.sample("steered", runtime="pyro", seed=5, particles=500)
    expected = ppl.sample(python, method="pf", runtime="pyro", seed=5, particles=500, resample_threshold=0.5)
    assert np.isclose(r.log_z, expected.log_z, rtol=1e-5) and r.sequences == expected.sequences


def test_python_models_and_rewards_with_allow_python(tmp_path, monkeypatch):
    """`use` brings a stateful Python model (ids from 0) and a Python reward of one argument (exact prefixes)."""
    (tmp_path / "seqmods.py").write_text(textwrap.dedent("""
        import numpy as np
        from ppl.stdlib.sequence_tables import NGram
        table = NGram(np.array(%r)).bind("pyro")
        def zeros(prefixes):
            return (prefixes == 0).sum(1) * 1.0
    """ % TABLE.tolist()))
    monkeypatch.syspath_prepend(str(tmp_path))
    text = ('use lm_model from "seqmods:table"\nuse zeros from "seqmods:zeros"\n'
            'sequence lm = autoregressive(lm_model, vocab = 3, length = 5, eos = 3)\n'
            'target a = lm * exp(zeros(tokens) / 0.5)\ntarget b = lm * exp((zeros(tokens) + 2 * ends_with(tokens, '
            '[2, 3]) - (length(tokens) > 3)) / 0.5)\n')
    prog = load_ppl(text, allow_python=True)
    assert prog.targets["a"].functions()[0].fn is sys.modules["seqmods"].zeros
    assert prog.targets["b"].functions()[0].parents == ("prefixes",)       # exact prefixes, for zeros
    model = prog.sequences["lm"].next_logprobs
    for name, fn in (("a", lambda x: x.count(0)), ("b", reward)):
        r = prog.sample(name, method="pf", runtime="pyro", particles=2000, seed=2)
        exact = exact_log_z(model, fn, 0.5)
        assert abs(r.log_z - exact) < 4 * r.log_z_se, (name, r.log_z, r.log_z_se, exact)
    with pytest.raises(ppl.SourceError, match="refusing to import"):
        load_ppl(text)


D = "data t : real[4, 3]\n"
INLINE = "[[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4], [0.1, 0.1, 0.8]]"
# (program, line, where the caret points: the first occurrence of this text on the line, message)
ERRORS = [
    ("sequence lm = markv(t, length = 5)\n", 1, "markv", "unknown sequence base 'markv'"),
    (f"sequence lm = markov({INLINE}, length = 5, eso = 3)\n", 1, "eso", "markov has no option 'eso'"),
    (f"sequence lm = markov({INLINE})\n", 1, "markov", "markov needs length = L"),
    (f"sequence lm = markov({INLINE}, length = 0)\n", 1, "0)", "length must be an integer >= 1"),
    (f"sequence lm = markov({INLINE}, length = 5, eos = 4)\n", 1, "4)", "eos must be a token in 1..3, got 4"),
    (f"sequence lm = markov({INLINE}, length = 5, eos = 0)\n", 1, "0)", "eos must be a token in 1..3, got 0"),
    (f"sequence lm = markov({INLINE}, length = 5, prompt = [1, 5])\n", 1, "5]", "a prompt token must be a token"),
    (f"sequence lm = markov({INLINE}, length = 5, step = [4])\n", 1, "4])", "a step delimiter must be a token"),
    ("sequence lm = markov([[0.5, 0.5], [0.5, 0.5]], length = 5)\n", 1, "[[",
     "has shape [2 + 1, 2] = [3, 2], got [2, 2]"),
    ("sequence lm = markov([0.5, 0.5], length = 5)\n", 1, "[", "a markov table is a matrix [V + 1, V]"),
    ("sequence lm = markov([[0.5, 0.5], [0.5, 0.4], [1, 0]], length = 5)\n", 1, "[[", "row [2] sums to 0.9"),
    ("sequence lm = markov([[0.5, 0.5], [1.5, -0.5], [1, 0]], length = 5)\n", 1, "[[", "entry [2, 2] is -0.5"),
    ("sequence lm = ngram([[0.5, 0.5], [0.5, 0.5], [1, 0]], order = 3, length = 5)\n", 1, "3,",
     "an ngram table of order 3 has 3 axes"),
    ("sequence lm = markov(t, length = 5, vocab = 3)\n", 1, "vocab", "markov has no option 'vocab'"),
    ('use g from "my_pkg.lm:gpt"\nsequence lm = autoregressive(g, vocab = 5, length = 8)\n', 1, "use",
     "refusing to import Python module 'my_pkg.lm'"),
    ("sequence lm = autoregressive(g, vocab = 5, length = 8)\n", 1, "g,", "imported by `use"),
    (f"sequence lm = markov({INLINE}, length = 5)\ntarget s = lm * exp(cont(tokens, 1))\n", 2, "cont",
     "unknown function 'cont'"),
    (f"sequence lm = markov({INLINE}, length = 5)\ntarget s = lm * exp(count(tokens, 4) / 2)\n", 2, "4)",
     "a pattern token must be a token in 1..3, got 4"),
    (f"sequence lm = markov({INLINE}, length = 5)\ntarget s = lm * exp(count(tokens, [1, 0]))\n", 2, "0]",
     "got 0"),
    (f"sequence lm = markov({INLINE}, length = 5)\ntarget s = lm * exp(sum(tokens) / 2)\n", 2, "sum",
     "unknown function 'sum'"),
    (f"sequence lm = markov({INLINE}, length = 5)\ntarget s = lm * exp(tokens / 2)\n", 2, "tokens",
     "tokens is not a number"),
    (f"sequence lm = markov({INLINE}, length = 5)\ntarget s = lm * exp(count(x, 1))\n", 2, "x,",
     "the first argument of count is tokens"),
    (f"sequence lm = markov({INLINE}, length = 5)\ntarget s = lm * exp(count(tokens, 1) * lam)\n", 2, "lam",
     "reads 'lam', which is neither tokens nor data"),
    (f"sequence lm = markov({INLINE}, length = 5)\ntarget s = lm * exp(length(tokens, 1))\n", 2, "length",
     "length takes 1 argument"),
    (f"sequence lm = markov({INLINE}, length = 5)\nmodel m {{ x ~ normal(0, 1) }}\ntarget s = lm * m\n", 3, "*",
     "combines the sequence lm with the model m"),
    (f"sequence lm = markov({INLINE}, length = 5)\nsequence lm4 = markov([[0.5, 0.5], [0.5, 0.5], [1, 0]], "
     f"length = 5)\ntarget s = geometric(lm, lm4, 2)\n", 3, "geometric", "must agree in vocab: 3 against 2"),
    (f"sequence lm = markov({INLINE}, length = 5, eos = 3)\nsequence l2 = markov({INLINE}, length = 5, eos = 2)\n"
     f"target s = lm * l2\n", 3, "*", "must agree in eos: 3 against 2"),
    (f"sequence lm = markov({INLINE}, length = 5)\ntarget s = lm | tokens = [1, 2]\n", 2, "tokens",
     "cannot be conditioned"),
    (f"sequence lm = markov({INLINE}, length = 5)\ntarget s = lm ^ 0\n", 2, "0", "must be > 0"),
    (f"sequence lm = markov({INLINE}, length = 5)\nsample lm with pf(particles = 10, treshold = 0.5)\n", 2, "sample",
     "method 'pf' has no option(s) treshold; its options: "),
    (f"sequence lm = markov({INLINE}, length = 5)\nsample lm with beam(beam_widht = 2)\n", 2, "sample",
     "method 'beam' has no option(s) beam_widht"),
    (f"sequence lm = markov({INLINE}, length = 5)\nsample lm with smc(particles = 10)\n", 2, "sample",
     "method 'smc' samples models"),
]


@pytest.mark.parametrize("text, line, anchor, message", ERRORS, ids=[m for *_, m in ERRORS])
def test_errors_are_located(text, line, anchor, message, tmp_path, capsys):
    """`ppl check` exits 2 with file:line:col, the message, the source line, a caret under the column and no
    traceback."""
    col = text.splitlines()[line - 1].index(anchor) + 1
    path = tmp_path / "bad.ppl"
    path.write_text(text)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:{line}:{col}: ") and message in err, err
    lines = err.splitlines()
    assert lines[2].index("^") - 4 == col - 1 and "Traceback" not in err, err


def test_check_with_and_without_data(tmp_path, capsys):
    assert main(["check", STEERING, "--data", STEERING_DATA]) == 0
    assert "2 sequence(s), 4 target(s) built" in capsys.readouterr().out
    assert main(["check", STEERING]) == 0
    out = capsys.readouterr().out
    assert "symbolic data (no --data): table, table3" in out and "lm: checked up to where" in out


def test_cli_run_prints_and_out_round_trips(tmp_path, capsys):
    out = tmp_path / "r.nc"
    assert main(["run", STEERING, "--data", STEERING_DATA, "--runtime", "pyro", "--particles", "300",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ESS per step: " in text and "answer: [" in text and "top sequences (total weight):" in text
    assert "log Z = " in text and " ± " in text and "method pf(particles=300, " in text and ") on pyro, " in text
    top = text.split("top sequences (total weight):\n")[1].splitlines()[0].split(None, 1)[1]
    assert top.startswith("[") and "0" not in top.strip("[]").split(", ")     # tokens printed from 1
    r = ppl.load(str(out))
    assert len(r.sequences) == 300 and r.answer in r.sequences and r.method == "pf"
    assert text.count("answer: " + "[" + ", ".join(str(t + 1) for t in r.answer) + "]") == 1


@pytest.mark.parametrize("method, options", [("pf", {}), ("pg", {"iterations": 2}), ("bon", {}), ("wbon", {}),
                                             ("beam", {"beam_width": 2})])
def test_load_keeps_sequences_and_answer(method, options, tmp_path):
    """ppl.load gives back the sequences and the answer of every sequence method."""
    lm = st.markov(TABLE, 4, eos=2)
    r = ppl.sample(lm.tilt(lambda p, n: st.count(p, n, 0), 1.0), method=method, runtime="pyro", particles=40,
                   seed=0, **options)
    back = ppl.load(r.save(str(tmp_path / "r.nc")))
    assert back.sequences == r.sequences and back.answer == r.answer and back.method == method
    assert back.log_z == r.log_z

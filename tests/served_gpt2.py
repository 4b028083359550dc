"""A small GPT-2 served by a real `transformers serve` process, for tests/test_served.py and benchmarks/served.py:
a byte-level BPE tokenizer trained here with `tokenizers` on the alphabet {a, b, newline, space} with no merges
(vocabulary 5, <|endoftext|> = 0 the eos), so text and tokens correspond one to one, and a random 2-layer GPT-2
whose generation_config samples the model itself (do_sample, top_k 0, top_p 1, temperature 1); no download.
"""
import os
import socket
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_model(path, n_embd=16, n_layer=2):
    """The tokenizer and GPT-2 of the module docstring, saved to `path`; returns (model, tokenizer) in memory."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["ab a\nb ba\nab"] * 10, trainers.BpeTrainer(
        vocab_size=5, special_tokens=["<|endoftext|>"], show_progress=False))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                                pad_token="<|endoftext|>")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=5, n_positions=256, n_embd=n_embd, n_layer=n_layer, n_head=2,
                                  initializer_range=0.3, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    model.generation_config = transformers.GenerationConfig(do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                                                            eos_token_id=0, pad_token_id=0)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return model, fast


class Server:
    """`transformers serve` of the model at `path` on 127.0.0.1:port, offline, in a process of its own (its
    `Serve` command, started without the CLI's other commands); `url` waits until /health answers."""

    def __init__(self, path, port=None):
        self.port = port or free_port()
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
        self.log, self.ready = os.path.join(path, f"serve-{self.port}.log"), False
        self._out = open(self.log, "w")     # a file: a pipe nobody reads fills up with the access log and stalls it
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from transformers.cli.serve import Serve; "
             "Serve(force_model=sys.argv[1], host='127.0.0.1', port=int(sys.argv[2]), log_level='warning')",
             str(path), str(self.port)], env=env, stdout=self._out, stderr=subprocess.STDOUT)

    @property
    def url(self):
        import httpx2
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 180
        while not self.ready and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                with open(self.log) as f:
                    raise RuntimeError(f"transformers serve exited with {self.proc.returncode}:\n{f.read()}")
            try:
                self.ready = httpx2.get(url + "/health", timeout=1).status_code == 200
            except httpx2.TransportError:
                time.sleep(0.1)
        if not self.ready:
            raise RuntimeError("transformers serve did not answer /health within 180 s")
        return url

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()

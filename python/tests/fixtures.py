"""Models for the Python tests, made once per run with the build's `moelm` command: a data-bin
of whitespace words (60 lines of the shipped corpus) with a tiny dense model and a tiny hMoElp
mixture of 2 experts (3 updates each), a tiny model on the shipped SentencePiece data-bin, and
fairseq's dense test checkpoint (GPT-2 ids) converted with `moelm convert`."""

import atexit
import os
import shutil
import subprocess
import tempfile

SRC = os.environ.get("MOELM_SRCDIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("MOELM_BUILDDIR") or os.path.join(SRC, "build")
MOELM = os.path.join(BUILD, "cli", "moelm")
GPT2_FILES = ["--gpt2-encoder-json", os.path.join(SRC, "data-bin", "gpt2", "encoder.json"),
              "--gpt2-vocab-bpe", os.path.join(SRC, "data-bin", "gpt2", "vocab.bpe")]
FAIRSEQ_DIR = os.path.join(SRC, "tests", "torch", "fixtures", "dense")


def run(*args, stdin=None, check=True):
    """`moelm ARGS...`: (exit status, stdout, stderr)."""
    p = subprocess.run([MOELM] + [str(a) for a in args], input=stdin, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError("moelm %s: exit %d\n%s" % (" ".join(map(str, args)), p.returncode, p.stderr))
    return p.returncode, p.stdout, p.stderr


def cli_error(*args):
    """The message of a failing command: its stderr line after 'error: '."""
    rc, _, err = run(*args, check=False)
    assert rc != 0, "moelm %s succeeded" % " ".join(map(str, args))
    line = [l for l in err.splitlines() if ": error: " in l][-1]
    return line.split(": error: ", 1)[1]


class Fixtures:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="moelm-python-tests-")
        atexit.register(shutil.rmtree, self.dir, True)
        with open(os.path.join(SRC, "data-bin", "text", "valid.txt"), encoding="utf-8") as f:
            self.lines = [l.rstrip("\n") for l in f][:60]
        text = self.path("text.txt")
        with open(text, "w", encoding="utf-8") as f:
            f.write("\n".join(self.lines) + "\n")
        self.data = self.path("data")
        run("preprocess", "--only-source", "--trainpref", text, "--validpref", text, "--testpref", text,
            "--destdir", self.data)
        self.dense = self.train("dense", self.data)
        self.mixture = self.train("mix", self.data, "--task", "language_model_moe", "--method", "hMoElp",
                                  "--num-experts", "2", "--mean-pool-gating-network", "--gating-context", "16")
        self.spm_data = os.path.join(SRC, "data-bin", "demo")
        self.spm = self.train("spm", self.spm_data)
        self.gpt2 = self.path("gpt2-dense.pt")
        run("convert", "--from", "fairseq", FAIRSEQ_DIR, "--save", self.gpt2)

    def path(self, *names):
        return os.path.join(self.dir, *names)

    def train(self, name, data, *extra):
        save = self.path(name)
        args = ["train", data, "--arch", "transformer_lm", "--decoder-layers", "1", "--decoder-embed-dim", "16",
                "--decoder-ffn-embed-dim", "32", "--decoder-attention-heads", "2", "--tokens-per-sample", "32",
                "--max-target-positions", "128", "--batch-size", "4", "--lr", "0.003", "--max-update", "3",
                "--threads", "1", "--no-epoch-checkpoints", "--save-dir", save] + list(extra)
        run(*args)
        return os.path.join(save, "checkpoint_last.pt")

    def binarize(self, name, lines, srcdict_dir=None):
        """A data-bin whose test split is `lines`, with the dictionary of srcdict_dir."""
        text = self.path(name + ".txt")
        with open(text, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        dest = self.path(name)
        run("preprocess", "--only-source", "--testpref", text, "--srcdict",
            os.path.join(srcdict_dir or self.data, "dict.txt"), "--destdir", dest)
        return dest


_fixtures = None


def get():
    global _fixtures
    if _fixtures is None:
        _fixtures = Fixtures()
    return _fixtures

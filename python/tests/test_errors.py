"""Failures raise moelm exceptions carrying the library's message, the one the command line
prints after "error: " for the same mistake; using a closed model is a ValueError."""

import os
import shutil
import unittest

import numpy as np

import fixtures
import moelm
from moelm import LM


class Errors(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fx = fixtures.get()

    def assert_same_as_cli(self, exc_type, cli_args, **kwargs):
        """from_pretrained(**kwargs) raises exc_type with the message `moelm CLI_ARGS` prints."""
        want = fixtures.cli_error(*cli_args)
        with self.assertRaises(exc_type) as cm:
            LM.from_pretrained(**kwargs)
        self.assertEqual(str(cm.exception), want)
        self.assertIsInstance(cm.exception, moelm.Error)
        return cm.exception

    def test_missing_checkpoint(self):
        missing = self.fx.path("no-such-dir", "checkpoint_best.pt")
        e = self.assert_same_as_cli(moelm.FileError, ["eval-lm", self.fx.data, "--path", missing],
                                    model_name_or_path=missing, data=self.fx.data)
        self.assertIn(missing, str(e))
        self.assertEqual((e.code, e.status), (1, "MOELM_E_IO"))

    def test_missing_data(self):
        missing = self.fx.path("no-such-data")
        e = self.assert_same_as_cli(moelm.Error, ["eval-lm", missing, "--path", self.fx.dense],
                                    model_name_or_path=self.fx.dense, data=missing)
        self.assertIn(os.path.join(missing, "dict.txt"), str(e))

    def test_corrupt_checkpoint(self):
        with open(self.fx.dense, "rb") as f:
            blob = f.read()
        for name, data in (("truncated.pt", blob[: len(blob) // 2]), ("garbage.pt", b"\x10\x00" + b"x" * 100),
                           ("flipped.pt", blob[:8] + b"[" + blob[9:])):
            path = self.fx.path(name)
            with open(path, "wb") as f:
                f.write(data)
            e = self.assert_same_as_cli(moelm.Error, ["eval-lm", self.fx.data, "--path", path],
                                        model_name_or_path=path, data=self.fx.data)
            self.assertIn(path, str(e))
            self.assertIn(e.status, ("MOELM_E_FORMAT", "MOELM_E_CORRUPT"))

    def test_corrupt_fairseq_checkpoint(self):
        bad = os.path.join(fixtures.SRC, "tests", "torch", "fixtures", "bad")
        out = self.fx.path("never.pt")
        for name in ("truncated.pt", "evil-global.pt", "bad-crc.pt"):
            path = os.path.join(bad, name)
            self.assert_same_as_cli(moelm.Error, ["convert", "--from", "fairseq", path, "--save", out],
                                    model_name_or_path=path)
            self.assertFalse(os.path.exists(out))

    def test_dictionary_mismatch(self):
        other = self.fx.path("other-data")
        shutil.copytree(self.fx.data, other, dirs_exist_ok=True)
        with open(os.path.join(other, "dict.txt"), "a", encoding="utf-8") as f:
            f.write("extraword 1\n")
        self.assert_same_as_cli(moelm.MismatchError, ["eval-lm", other, "--path", self.fx.dense],
                                model_name_or_path=self.fx.dense, data=other)

    def test_bad_options(self):
        with self.assertRaisesRegex(moelm.InvalidArgumentError, "^device 'tpu': choose auto, cpu, cuda or cuda:N$"):
            LM.from_pretrained(self.fx.dense, data=self.fx.data, device="tpu")
        with self.assertRaisesRegex(moelm.UnsupportedError, "bpe 'fastbpe'"):
            LM.from_pretrained(self.fx.dense, data=self.fx.data, bpe="fastbpe")
        with self.assertRaisesRegex(moelm.Error, "^/nonexistent.json: "):
            LM.from_pretrained(self.fx.dense, data=self.fx.data, bpe="gpt2", gpt2_encoder_json="/nonexistent.json",
                               gpt2_vocab_bpe="/nonexistent.bpe")
        with self.assertRaisesRegex(moelm.InvalidArgumentError, "threads"):
            LM.from_pretrained(self.fx.dense, data=self.fx.data, threads=-2)
        with self.assertWarnsRegex(UserWarning, "is_moe=True is ignored"):
            LM.from_pretrained(self.fx.dense, data=self.fx.data, is_moe=True).close()

    def test_calls(self):
        with LM.from_pretrained(self.fx.mixture, data=self.fx.data, threads=1) as lm:
            with self.assertRaisesRegex(moelm.InvalidArgumentError, r"^expert 2: .*checkpoint_last.pt has 2 experts"):
                lm.score("a b", expert=2)
            with self.assertRaises(ValueError):
                lm.score("a b", expert="best")
            with self.assertRaisesRegex(moelm.InvalidArgumentError, r"token 1 is 99999, outside the vocabulary"):
                lm.score_tokens([5, 99999])
            with self.assertRaisesRegex(moelm.InvalidArgumentError, "exceed the model's 128 positions"):
                lm.score(" ".join(["the"] * 200))
            with self.assertRaisesRegex(moelm.InvalidArgumentError, "not valid UTF-8"):
                lm.encode("bad \udc80 surrogate")
            with self.assertRaises(TypeError):
                lm.score_tokens(np.array([1.5, 2.0]))
        with self.assertRaisesRegex(ValueError, "closed"):
            lm.score("a b")
        with LM.from_pretrained(self.fx.dense, data=self.fx.data) as lm:
            with self.assertRaisesRegex(moelm.InvalidArgumentError, "only a sequence-level mixture"):
                lm.posterior("a b")
            with self.assertRaisesRegex(moelm.InvalidArgumentError, "not a sequence-level mixture"):
                lm.score("a b", expert="auto")

    def test_fairseq_methods(self):
        lm = LM.from_pretrained(self.fx.dense, data=self.fx.data, threads=1)
        before = lm.score(self.fx.lines[0])["positional_scores"]
        self.assertIs(lm.eval(), lm)
        self.assertIs(lm.half(), lm)
        if moelm.device_count() == 0:
            with self.assertWarnsRegex(UserWarning, "stays on the CPU"):
                self.assertIs(lm.cuda(), lm)
            np.testing.assert_array_equal(lm.score(self.fx.lines[0])["positional_scores"], before)
        self.assertIs(lm.cpu(), lm)
        self.assertIs(lm.float(), lm)
        self.assertEqual(lm.device_id, -1)
        np.testing.assert_array_equal(lm.score(self.fx.lines[0])["positional_scores"], before)
        lm.close()
        lm.close()  # twice is fine
        self.assertIn("closed", repr(lm))


if __name__ == "__main__":
    unittest.main()

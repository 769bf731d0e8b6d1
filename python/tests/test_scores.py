"""Scores, posteriors and text through moelm.LM, checked against the command line on the same
inputs: `moelm eval-lm --output-word-probs` (six decimals) and `moelm score --jsonl` (every
digit), on a plain model, a sequence-level mixture, SentencePiece and GPT-2 BPE."""

import json
import math
import os
import re
import unittest

import numpy as np

import fixtures
from moelm import LM

WORD_PROB = re.compile(r" \[(-?(?:[0-9.]+|inf))\]$")


def eval_lm_word_probs(data, ckpt):
    """Every token's natural-log probability as `moelm eval-lm` prints it for the test split
    scored as one block (one row from </s>, no context)."""
    _, out, _ = fixtures.run("eval-lm", data, "--path", ckpt, "--gen-subset", "test", "--sample-break-mode", "none",
                             "--tokens-per-sample", "128", "--context-window", "0", "--output-word-probs",
                             "--batch-size", "1", "--threads", "1")
    rows = [l for l in out.splitlines() if "| fairseq_cli.eval_lm | 0 " in l]
    assert len(rows) == 1, out
    return [float(WORD_PROB.search(w).group(1)) for w in rows[0].split(" | 0 ", 1)[1].split("\t")]


def cli_score(data, ckpt, items, *extra):
    """`moelm score --jsonl` on items (context, choices): the list of per-item score lists."""
    path = os.path.join(fixtures.get().dir, "items.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for ctx, choices in items:
            f.write(json.dumps({"context": ctx, "choices": choices}) + "\n")
    _, out, _ = fixtures.run("score", data, "--path", ckpt, "--input", path, "--jsonl", "--threads", "1", *extra)
    return [json.loads(l)["scores"] for l in out.splitlines() if l.startswith('{"id"')]


class ScoresAgainstCli(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fx = fixtures.get()
        words = [l for l in cls.fx.lines if l.split()]
        cls.lines = [words[3], "", words[4], words[5]]  # a blank line: a second </s>
        cls.words = words
        cls.eval_data = cls.fx.binarize("evaltext", cls.lines)

    def check_eval_lm(self, ckpt):
        want = eval_lm_word_probs(self.eval_data, ckpt)
        with LM.from_pretrained(ckpt, data=self.fx.data, threads=1) as lm:
            r = lm.score("\n".join(self.lines), replace_newlines_with_eos=True)
            # the hub leaves out the final </s>, which eval-lm scores as the block's last token
            self.assertEqual(len(r["positional_scores"]), len(want) - 1)
            self.assertEqual(int(r["tokens"][-1]), lm.index(self.lines[-1].split()[-1]))
            diff = np.abs(r["positional_scores"].astype(np.float64) - np.array(want[:-1]))
            self.assertLessEqual(diff.max(), 1e-6, diff)
            self.assertAlmostEqual(float(r["score"]), float(np.mean(r["positional_scores"])), places=5)
            self.assertIsNone(r["expert"])

    def test_eval_lm_dense(self):
        self.check_eval_lm(self.fx.dense)

    def test_eval_lm_mixture_marginal(self):
        self.check_eval_lm(self.fx.mixture)

    def check_score_cli(self, ckpt, expert, extra):
        w = self.words
        items = [("", [w[0]]), ("", ["\n".join(w[:3])]), (w[1] + " ", [w[2]]), (w[3] + "\n\n", [w[4]])]
        want = cli_score(self.fx.data, ckpt, items, "--replace-newlines-with-eos", *extra)
        with LM.from_pretrained(ckpt, data=self.fx.data, threads=1) as lm:
            got = [lm.score(c[0], replace_newlines_with_eos=True, expert=expert, context=ctx) for ctx, c in items]
        for g, w in zip(got, want):
            self.assertEqual(len(g["positional_scores"]), w[0]["tokens"])
            np.testing.assert_allclose(g["positional_scores"], w[0]["positional_scores"], rtol=0, atol=1e-6)
            self.assertAlmostEqual(float(np.sum(g["positional_scores"], dtype=np.float64)), w[0]["sum"], places=5)
            self.assertEqual(g["expert"], w[0].get("expert"))

    def test_score_dense(self):
        self.check_score_cli(self.fx.dense, None, [])

    def test_score_mixture(self):
        self.check_score_cli(self.fx.mixture, None, [])
        self.check_score_cli(self.fx.mixture, "mixture", [])
        self.check_score_cli(self.fx.mixture, 1, ["--gen-expert", "1"])
        self.check_score_cli(self.fx.mixture, "auto", ["--gen-expert", "auto"])

    def test_score_gpt2(self):
        items = [("The man broke his toe. What was the CAUSE of this?\n", ["He dropped a hammer on his foot."])]
        want = cli_score(fixtures.FAIRSEQ_DIR, self.fx.gpt2, items, "--bpe", "gpt2", "--replace-newlines-with-eos",
                         *fixtures.GPT2_FILES)
        # the fairseq checkpoint itself, converted in memory, and the one `moelm convert` wrote
        for path, data in ((fixtures.FAIRSEQ_DIR, None), (self.fx.gpt2, fixtures.FAIRSEQ_DIR)):
            with LM.from_pretrained(path, data=data, bpe="gpt2", threads=1) as lm:
                g = lm.score(items[0][1][0], replace_newline_with_eos=True, context=items[0][0])
                np.testing.assert_allclose(g["positional_scores"], want[0][0]["positional_scores"], rtol=0, atol=1e-6)


class Mixture(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fx = fixtures.get()
        cls.lm = LM.from_pretrained(cls.fx.mixture, data=cls.fx.data, threads=1)

    @classmethod
    def tearDownClass(cls):
        cls.lm.close()

    def test_what_it_is(self):
        lm = self.lm
        self.assertEqual((lm.num_experts, lm.task, lm.method, lm.bpe), (2, "language_model_moe", "hMoElp", "none"))
        self.assertEqual(lm.symbol(lm.vocab_size - 1), "<expert_1>")
        self.assertEqual(lm.index("<expert_0>"), lm.vocab_size - 2)
        self.assertIn("cpu", lm.device)
        self.assertEqual(lm.device_id, -1)

    def test_posterior_and_marginal(self):
        lm, text = self.lm, " ".join(self.fx.lines[10].split()[:12])
        post, joint = lm.posterior(text, return_log_joint=True)
        self.assertEqual(post.shape, (2,))
        self.assertAlmostEqual(float(post.sum()), 1.0, places=12)
        np.testing.assert_allclose(post, np.exp(joint - np.logaddexp.reduce(joint)), rtol=1e-12)
        # the marginal's scores add up to log Σ_k π_k p_k(text)
        marginal = float(np.sum(lm.score(text)["positional_scores"], dtype=np.float64))
        self.assertAlmostEqual(marginal, float(np.logaddexp.reduce(joint)), places=4)
        # each expert's scores add up to log p_k(text), so exp(log_joint - that) is a prior
        prior = [math.exp(joint[k] - float(np.sum(lm.score(text, expert=k)["positional_scores"], dtype=np.float64)))
                 for k in range(2)]
        self.assertAlmostEqual(sum(prior), 1.0, places=4)
        # auto after the text as context: the expert the posterior favours
        r = lm.score(self.fx.lines[11], context=text + " ", expert="auto")
        self.assertEqual(r["expert"], int(np.argmax(post)))
        rows = lm.posterior([text, self.fx.lines[12]])
        self.assertEqual(rows.shape, (2, 2))
        np.testing.assert_allclose(rows[0], post)

    def test_per_expert_differs(self):
        text = self.fx.lines[20]
        s0, s1 = (self.lm.score(text, expert=k)["positional_scores"] for k in range(2))
        self.assertEqual(len(s0), len(s1))
        self.assertGreater(float(np.abs(s0 - s1).max()), 0)


class Text(unittest.TestCase):
    def test_words(self):
        fx = fixtures.get()
        with LM.from_pretrained(fx.dense, data=fx.data) as lm:
            line = fx.lines[5]
            t = lm.encode(line + "\n" + fx.lines[6], replace_newlines_with_eos=True)
            self.assertEqual(t.dtype, np.int64)
            self.assertEqual(int(t[-1]), 2)
            self.assertEqual(int(t[len(line.split())]), 2)
            self.assertEqual(lm.decode(t), " ".join(line.split() + fx.lines[6].split()))
            self.assertEqual(list(lm.encode("zzzunseen")), [3, 2])  # <unk>, </s>

    def test_sentencepiece(self):
        fx = fixtures.get()
        with LM.from_pretrained(fx.spm, data=fx.spm_data) as lm:
            self.assertEqual(lm.bpe, "sentencepiece")
            text = "The quick program prints its licence."
            t = lm.encode(text)
            self.assertGreater(len(t), 3)
            self.assertTrue(lm.symbol(int(t[0])).startswith("\u2581"))
            self.assertEqual(lm.decode(t), text)
            # moelm generate's S- line is the same pieces
            _, out, _ = fixtures.run("generate", fx.spm_data, "--path", fx.spm, "--beam", "1", "--max-len-b", "1",
                                     "--threads", "1", stdin=text + "\n")
            s = [l for l in out.splitlines() if l.startswith("S-0\t")][0]
            self.assertEqual(s.split("\t", 1)[1], " ".join(lm.symbol(int(i)) for i in t[:-1]))

    def test_gpt2(self):
        with LM.from_pretrained(fixtures.FAIRSEQ_DIR, bpe="gpt2") as lm:
            self.assertEqual(lm.bpe, "gpt2")
            t = lm.encode("The was a")
            self.assertEqual([lm.symbol(int(i)) for i in t], ["464", "373", "257", "</s>"])
            self.assertEqual(lm.decode(t), "The was a")
            # a GPT-2 token the dictionary lacks is <unk>, written as it is (fairseq's GPT2BPE.decode)
            t = lm.encode("The zebra")
            self.assertEqual(lm.decode(t), "The" + "<unk>" * (len(t) - 2))


if __name__ == "__main__":
    unittest.main()

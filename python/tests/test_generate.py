"""moelm.LM.sample / generate against `moelm generate` with the same seed and options: the same
hypotheses (tokens, text, scores), for beam search and sampling, plain models, mixture experts
(fixed and auto) and GPT-2 BPE."""

import math
import os
import unittest

import numpy as np

import fixtures
from moelm import LM


def cli_generate(data, ckpt, prompts, *args):
    """`moelm generate` on prompts (one per line): per prompt, (S text, [(H score, H text, D
    text, P scores), ...])."""
    path = os.path.join(fixtures.get().dir, "prompts.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(p + "\n" for p in prompts))
    _, out, _ = fixtures.run("generate", data, "--path", ckpt, "--input", path, "--threads", "1", *args)
    blocks = []
    for line in out.splitlines():
        kind, rest = line.split("-", 1)
        fields = rest.split("\t")
        if kind == "S":
            blocks.append((fields[1], []))
        elif kind == "H":
            blocks[-1][1].append([float(fields[1]), fields[2]])
        elif kind == "D":
            blocks[-1][1][-1].append(fields[2])
        elif kind == "P":
            blocks[-1][1][-1].append([float(x) for x in fields[1].split()])
    return blocks


def base2(x):
    """The float the CLI prints for a natural-log float32 score: x / ln 2 in float32."""
    return float(np.float32(x) / np.float32(math.log(2)))


class GenerateAgainstCli(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fx = fixtures.get()
        words = [l for l in cls.fx.lines if len(l.split()) > 3]
        cls.prompts = [" ".join(words[0].split()[:3]), " ".join(words[1].split()[:2]), ""]

    def compare(self, lm, cli, prompts, expert, **opts):
        got = lm.generate([lm.encode(p) for p in prompts], expert=expert, **opts)
        self.assertEqual(len(got), len(cli))
        for hyps, (_, want) in zip(got, cli):
            self.assertEqual(len(hyps), len(want))
            for h, (score, htext, dtext, pos) in zip(hyps, want):
                self.assertEqual(lm.decode(h["tokens"]), dtext)
                self.assertEqual(int(h["tokens"][-1]), 2)
                self.assertEqual(base2(h["score"]), score)
                np.testing.assert_allclose(h["positional_scores"] / math.log(2), pos, rtol=0, atol=1e-4)
        return got

    def test_beam_dense(self):
        cli = cli_generate(self.fx.data, self.fx.dense, self.prompts, "--beam", "3", "--nbest", "3", "--max-len-b",
                           "8")
        with LM.from_pretrained(self.fx.dense, data=self.fx.data, threads=1) as lm:
            self.compare(lm, cli, self.prompts, None, beam=3, max_len_b=8)

    def test_sampling_seed_dense(self):
        args = ["--sampling", "--beam", "2", "--nbest", "2", "--sampling-topk", "20", "--temperature", "1.3",
                "--max-len-b", "10", "--seed", "17"]
        cli = cli_generate(self.fx.data, self.fx.dense, self.prompts, *args)
        other = cli_generate(self.fx.data, self.fx.dense, self.prompts, *args[:-1], "18")
        self.assertNotEqual(cli, other)  # the seed matters
        with LM.from_pretrained(self.fx.dense, data=self.fx.data, threads=1) as lm:
            self.compare(lm, cli, self.prompts, None, beam=2, sampling=True, sampling_topk=20, temperature=1.3,
                         max_len_b=10, seed=17)
            # sample(): the best hypothesis' text, prompt i drawing from stream i as line i does
            one = cli_generate(self.fx.data, self.fx.dense, self.prompts, "--sampling", "--beam", "1",
                               "--sampling-topp", "0.9", "--max-len-b", "10", "--seed", "17")
            self.assertEqual(lm.sample(self.prompts, sampling=True, sampling_topp=0.9, max_len_b=10, seed=17),
                             [hyps[0][2] for _, hyps in one])
            self.assertEqual(lm.sample(self.prompts[0], sampling=True, sampling_topp=0.9, max_len_b=10, seed=17),
                             one[0][1][0][2])

    def test_mixture_experts(self):
        args = ["--sampling", "--beam", "1", "--sampling-topp", "0.8", "--max-len-b", "10", "--seed", "5"]
        with LM.from_pretrained(self.fx.mixture, data=self.fx.data, threads=1) as lm:
            for gen_expert, expert in (("1", 1), ("0", None), ("auto", "auto")):
                cli = cli_generate(self.fx.data, self.fx.mixture, self.prompts[:2], *args, "--gen-expert", gen_expert)
                got = self.compare(lm, cli, self.prompts[:2], expert, beam=1, sampling=True, sampling_topp=0.8,
                                   max_len_b=10, seed=5)
                for hyps, p in zip(got, self.prompts[:2]):
                    want = int(np.argmax(lm.posterior(p))) if expert == "auto" else expert or 0
                    self.assertEqual(hyps[0]["expert"], want)
                    self.assertFalse(np.any(hyps[0]["tokens"] >= lm.vocab_size - 2))  # no expert token generated

    def test_gpt2(self):
        prompts = ["The man was", "He"]
        cli = cli_generate(fixtures.FAIRSEQ_DIR, self.fx.gpt2, prompts, "--bpe", "gpt2", *fixtures.GPT2_FILES,
                           "--beam", "1", "--sampling", "--sampling-topp", "0.9", "--max-len-b", "12", "--seed", "3")
        with LM.from_pretrained(fixtures.FAIRSEQ_DIR, bpe="gpt2", threads=1) as lm:
            self.compare(lm, cli, prompts, None, beam=1, sampling=True, sampling_topp=0.9, max_len_b=12, seed=3)
            self.assertEqual(lm.sample(prompts, sampling=True, sampling_topp=0.9, max_len_b=12, seed=3),
                             [hyps[0][2] for _, hyps in cli])

    def test_options_checked(self):
        with LM.from_pretrained(self.fx.dense, data=self.fx.data, threads=1) as lm:
            with self.assertRaises(TypeError):
                lm.sample("a", samplng=True)
            with self.assertRaisesRegex(ValueError, "temperature"):
                lm.sample("a", temperature=0)
            with self.assertRaisesRegex(ValueError, "expert 1: .* is a language_modeling checkpoint"):
                lm.sample("a", expert=1)
            # one prompt as a list of ids: its hypotheses alone
            ids = [int(i) for i in lm.encode(self.prompts[0])]
            self.assertEqual([h["score"] for h in lm.generate(ids, beam=2, max_len_b=4)],
                             [h["score"] for h in lm.generate([ids], beam=2, max_len_b=4)[0]])
            # greedy by default (fairseq's sample: beam 1, no sampling): the same text every time
            self.assertEqual(lm.sample(self.prompts[0], max_len_b=5), lm.sample(self.prompts[0], max_len_b=5, seed=9))


if __name__ == "__main__":
    unittest.main()

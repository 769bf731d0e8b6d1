"""examples/copa/copa.py, the MoE LM README's COPA example with `from moelm import LM`, runs on
fairseq's dense test checkpoint (converted when loaded) and answers as `moelm score` does."""

import json
import os
import subprocess
import sys
import unittest

import fixtures
import moelm

ITEMS = [
    ("The man broke his toe. What was the CAUSE of this?", "He got a hole in his sock.",
     "He dropped a hammer on his foot."),
    ("I tipped the bottle. What happened as a RESULT?", "The liquid in the bottle froze.",
     "The liquid in the bottle poured out."),
    ("I knocked on my neighbor's door. What happened as a RESULT?", "My neighbor invited me in.",
     "My neighbor left his house."),
]


class Copa(unittest.TestCase):
    def test_readme_example(self):
        script = os.path.join(fixtures.SRC, "examples", "copa", "copa.py")
        p = subprocess.run([sys.executable, script, fixtures.FAIRSEQ_DIR], capture_output=True, text=True,
                           env=dict(os.environ))
        self.assertEqual(p.returncode, 0, p.stderr)
        answers = p.stdout.split()
        if moelm.device_count() == 0:
            self.assertIn("stays on the CPU", p.stderr)
        # the README's sums also count the context's tokens, the same for both alternatives:
        # the choice is `moelm score`'s (context: the prompt and its newline)
        path = os.path.join(fixtures.get().dir, "copa.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for prompt, a1, a2 in ITEMS:
                f.write(json.dumps({"context": prompt + "\n", "choices": [a1, a2]}) + "\n")
        _, out, _ = fixtures.run("score", fixtures.FAIRSEQ_DIR, "--path", fixtures.get().gpt2, "--input", path,
                                 "--bpe", "gpt2", *fixtures.GPT2_FILES, "--replace-newlines-with-eos", "--jsonl")
        want = [str(json.loads(l)["pred"] + 1) for l in out.splitlines() if l.startswith('{"id"')]
        self.assertEqual(answers, want)


if __name__ == "__main__":
    unittest.main()

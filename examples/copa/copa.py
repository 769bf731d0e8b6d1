#!/usr/bin/env python3
"""The COPA example of fairseq's "Efficient Large Scale Language Modeling with Mixtures of
Experts" README, run with moelm: the README's code as it is, with `from moelm import LM` in
place of fairseq's import (docs/python.md).

    python3 examples/copa/copa.py /path/to/en_dense_lm_125m

The directory is fairseq's download (model.pt and dict.txt; moelm converts model.pt when it
loads it) or one with a moelm checkpoint. Without a GPU, lm.cuda() warns and the model stays on
the CPU. The README's answers (2, 2, 1) are those of the real en_dense_lm_125m.
"""
import sys

from moelm import LM
model_dir = sys.argv[1] if len(sys.argv) > 1 else '/path/to/en_dense_lm_125m'
lm = LM.from_pretrained(model_dir, bpe='gpt2')
lm = lm.eval();  # disable dropout
lm = lm.half();  # use FP16 for evaluation
lm = lm.cuda();  # move to GPU

def get_logprobs(prompt):
    import re
    prompt = re.sub('\n+' , '\n', prompt)  # collapse repeated newlines, which indicate separate documents
    return lm.score(prompt, replace_newlines_with_eos=True)['positional_scores']

# Zero-shot evaluation for the Choice of Plausible Alternatives (COPA) task.
# A return value of 1 indicates that the first alternative is more plausible,
# while 2 indicates that the second alternative is more plausible.
def COPA_eval(prompt, alternative1, alternative2):
    lprob1 = get_logprobs(prompt + "\n" + alternative1).sum()
    lprob2 = get_logprobs(prompt + "\n" + alternative2).sum()
    return 1 if lprob1 > lprob2 else 2

print(COPA_eval("The man broke his toe. What was the CAUSE of this?", "He got a hole in his sock.", "He dropped a hammer on his foot."))
# 2
print(COPA_eval("I tipped the bottle. What happened as a RESULT?", "The liquid in the bottle froze.", "The liquid in the bottle poured out."))
# 2
print(COPA_eval("I knocked on my neighbor's door. What happened as a RESULT?", "My neighbor invited me in.", "My neighbor left his house."))
# 1

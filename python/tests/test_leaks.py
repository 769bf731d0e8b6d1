"""Nothing leaks: 1,000 cycles of load, encode, score, posterior, generate and close keep the
process's resident memory flat."""

import os
import time
import unittest

import fixtures
from moelm import LM

CYCLES = int(os.environ.get("MOELM_LEAK_CYCLES", "1000"))
WARMUP = 100
# What the cycles after the warm-up may add, in all. The mixture's weights alone are ~50 KB,
# its dictionary ~20 KB: leaking either once per cycle would add 60+ MB.
BOUND = 4 << 20


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Leaks(unittest.TestCase):
    @unittest.skipUnless(os.path.exists("/proc/self/statm"), "needs /proc")
    def test_load_score_free_cycles(self):
        fx = fixtures.get()
        text = fx.lines[0]

        def cycle():
            with LM.from_pretrained(fx.mixture, data=fx.data, threads=2) as lm:
                lm.score(text)
                lm.score(text, expert="auto", context="the ")
                lm.posterior(text)
                lm.sample(text, sampling=True, max_len_b=4)
            try:  # and a failing open
                LM.from_pretrained(fx.path("missing.pt"), data=fx.data)
            except Exception:
                pass

        for _ in range(WARMUP):
            cycle()
        start, t0 = rss(), time.monotonic()
        for _ in range(CYCLES - WARMUP):
            cycle()
        grown = rss() - start
        print("\n  %d cycles: RSS %.1f MB after the first %d, grew %+d KB, %.1f ms a cycle"
              % (CYCLES, start / 1e6, WARMUP, grown // 1024, (time.monotonic() - t0) * 1e3 / (CYCLES - WARMUP)))
        self.assertLess(grown, BOUND)


if __name__ == "__main__":
    unittest.main()

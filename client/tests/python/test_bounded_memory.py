"""An executor limited to 64 MiB shuffles about 1.1 GiB of row data and answers
right, its resident memory staying far below what it shuffled: map output streams into
the store under the memory pool and spills, rather than being held whole. Runs the query
of benches/python/bounded_shuffle.py against processes from QUIVER_BIN.
"""

import os
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benches" / "python"))
import bounded_shuffle  # noqa: E402


class BoundedShuffle(unittest.TestCase):
    def test_a_shuffle_far_larger_than_the_memory_limit_completes_within_it(self):
        figures = bounded_shuffle.run(os.environ["QUIVER_BIN"], limit=64 << 20)
        # The answer was checked by run(); the shuffle went through the store's files.
        self.assertGreater(figures["spilled"], 1 << 30)
        # Holding the shuffle in memory would take more than 1 GiB; under the limit the
        # executor stays within a few hundred MiB (about 190 measured).
        self.assertLess(figures["peak"], 512 << 20, figures)


if __name__ == "__main__":
    unittest.main()

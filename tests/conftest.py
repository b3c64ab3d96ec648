import os
import sys
from pathlib import Path

import torch
from hypothesis import settings

# tests/reference.py and tests/zoo.py are shared by every test folder.
sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(min(2, torch.get_num_threads()))

# Property tests draw the same examples on every run of the suite, so that a gate passes or fails with the code
# alone; PNTK_HYPOTHESIS=explore draws new ones (`make explore`), to look for what the fixed ones miss.
settings.register_profile("gate", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("PNTK_HYPOTHESIS", "gate"))

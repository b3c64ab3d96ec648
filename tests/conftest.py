import sys
from pathlib import Path

import torch

# tests/reference.py and tests/zoo.py are shared by every test folder.
sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(min(2, torch.get_num_threads()))

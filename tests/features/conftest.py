import sys
from pathlib import Path

# explicit.py (the explicit projection behind a feature map) is shared by this folder's tests.
sys.path.insert(0, str(Path(__file__).parent))

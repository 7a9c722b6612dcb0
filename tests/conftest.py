import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # the CVXPY reference helpers
# the tests read the shared data sets beside the checkout unless CONVEXGAN_DATA names another folder
os.environ.setdefault("CONVEXGAN_DATA", str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))

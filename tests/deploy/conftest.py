import sys
from pathlib import Path

# deploy_unit_file.py: the shipped unit and its parser, shared by the deploy tests.
sys.path.insert(0, str(Path(__file__).resolve().parent))

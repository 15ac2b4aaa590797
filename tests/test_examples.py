"""Smoke tests: every script in examples/ runs to the end in a subprocess.

The scripts assert their own results (the tutorial checks every number
against the formulas; the others check an accuracy or R^2), so a zero exit
status means they worked.  The scikit-learn examples are skipped when
scikit-learn is not installed.
"""
import os
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "examples")

CASES = {
    "tutorial_2_3_2_2.py": (False, "Every number matched the tutorial's "
                                   "formulas."),
    "regression.py": (False, "test R^2 ="),
    "digits_classifier.py": (True, "test accuracy:"),
    "sklearn_pipeline.py": (True, "test accuracy of the best pipeline:"),
    "mpi_fit.py": (False, "(all equal: True)"),  # one rank; 2 in test_mpi
}


@pytest.mark.parametrize("script", list(CASES))
def test_example_runs(script, tmp_path):
    needs_sklearn, expected = CASES[script]
    if needs_sklearn:
        pytest.importorskip("sklearn")
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, script)],
                          cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{script}:\n{proc.stdout}\n{proc.stderr}"
    assert expected in proc.stdout
    assert "Traceback" not in proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr


def test_every_example_is_tested():
    scripts = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py"))
    assert scripts == sorted(CASES)

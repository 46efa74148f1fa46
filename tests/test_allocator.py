"""mmea/allocator.py: the glibc thresholds are set once per command, and can be switched off."""

import json
import os
import platform
import subprocess
import sys

import pytest

CODE = "import json; from mmea.allocator import tune_allocator; print(json.dumps(tune_allocator()))"


def _run(env_extra: dict) -> dict:
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_thresholds_are_applied_on_glibc():
    assert _run({"MMEA_MALLOC_TUNE": "1"}) == {"applied": True, "reason": "mallopt"}


def test_switched_off_by_the_environment():
    assert _run({"MMEA_MALLOC_TUNE": "0"}) == {"applied": False, "reason": "MMEA_MALLOC_TUNE=0"}

"""``mmea bench``'s scaling hook (issue 18): ``[bench] scaling = [size, time]`` prints the fitted exponent."""

from __future__ import annotations

import pytest

from mmea.bench import load_pipeline, scaling_exponent
from mmea.errors import MmeaInputError


def test_exponent_of_power_laws():
    assert scaling_exponent([1e5, 1e6], [100.0, 100.0 * 10 ** 1.2]) == pytest.approx(1.2)
    assert scaling_exponent([1e4, 1e5, 1e6], [2.0, 20.0, 200.0]) == pytest.approx(1.0)
    assert scaling_exponent([1e5], [3.0]) is None


def test_scale_pipeline_declares_its_scaling(tmp_path):
    p = load_pipeline("pipelines/scale.toml")
    assert p.scaling == ["split.test", "timings.total_s"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[bench]\nname = "x"\ntask = "align"\nscaling = ["split.test"]\ndatasets = ["/tmp/x"]\n'
                   '[[rows]]\nlabel = "a"\n')
    with pytest.raises(MmeaInputError, match="scaling is"):
        load_pipeline(bad)

import subprocess
import sys

from zipp_assets.reddit.synthetic import not_synthetic_because


def test_the_cli_marks_its_dumps_as_synthetic(tmp_path):
    out = tmp_path / "raw"
    done = subprocess.run([sys.executable, "-m", "zipp_assets.simworld", "generate", "--out", str(out), "--users", "30",
                           "--months", "2019-01:2019-01", "--no-images"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not_synthetic_because(out / "reddit") is None  # the public demo key may run on these dumps
    (out / "reddit" / "RC_2019-01.zst").write_bytes(b"changed")
    assert not_synthetic_because(out / "reddit") is not None

"""Nothing in tdaeval unpickles: no pickle module, every torch.load with weights_only=True."""

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tdaeval"


def _sources():
    return [(path, path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))]


def test_no_pickle_in_the_package():
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{n}: {line.strip()}"
        for path, text in _sources()
        for n, line in enumerate(text.splitlines(), 1)
        if re.search(r"\b(c?pickle|dill|joblib\.load|marshal\.loads|shelve)\b", line)
    ]
    assert offenders == []


def test_every_torch_load_refuses_arbitrary_objects():
    calls = [(path, m) for path, text in _sources() for m in re.finditer(r"torch\.load\((?:[^()]|\([^()]*\))*\)", text)]
    assert calls, "the grep found no torch.load at all; the pattern is broken"
    unsafe = [f"{path.relative_to(PACKAGE.parent)}: {m.group(0)}" for path, m in calls if "weights_only=True" not in m.group(0)]
    assert unsafe == []


def test_the_grep_would_catch_an_unsafe_load(tmp_path):
    text = "state = torch.load(path, map_location='cpu')\nimport pickle\n"
    assert re.search(r"\b(c?pickle|dill)\b", text)
    assert "weights_only=True" not in re.search(r"torch\.load\((?:[^()]|\([^()]*\))*\)", text).group(0)

"""The README's "Use it from Python" block runs as written and prints what the README says."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_block(section):
    """The first ```python block under the README heading `## {section}`."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start:end if end >= 0 else None]
    match = re.search(r"```python\n(.*?)```", body, re.S)
    assert match, f"no python block under ## {section}"
    return match.group(1)


def test_the_readme_python_example_runs_and_prints_what_it_says():
    code = readme_block("Use it from Python")
    assert "models.load(" in code and "Vocabulary(" in code and ".generate(" in code
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 6, done.stdout
    words = [line.split()[1] for line in lines[:5]]
    probs = [float(line.split()[0]) for line in lines[:5]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) < 1
    assert words == ["<unk>", "same", "surface", "ground", "main"]              # as the README says
    assert lines[5] == "early four @-@ thirds of the nucleolus , and when"
    assert f'"{lines[5]}"' in (ROOT / "README.md").read_text(encoding="utf-8")   # the text it promises

"""Generate exercises/ from solutions/: every `### BEGIN SOLUTION … ### END SOLUTION` block becomes a stub.

    python scripts/make_exercises.py           # (re)write exercises/
    python scripts/make_exercises.py --check   # exit 1 if exercises/ is out of date (CI runs this)

The output is byte-stable, so --check is a plain comparison. Never edit exercises/ by hand: a learner's copy is
theirs to edit, and this script only overwrites it when run without --check.
"""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN = re.compile(r"^(\s*)### BEGIN SOLUTION\s*$")
END = re.compile(r"^\s*### END SOLUTION\s*$")
HEADER = "# GENERATED from solutions/{name} by scripts/make_exercises.py: this is your file, fill in the stubs.\n"


def make_stub(text: str, name: str) -> str:
    out, inside, n = [HEADER.format(name=name)], False, 0
    for lineno, line in enumerate(text.splitlines(keepends=True), 1):
        m = BEGIN.match(line)
        if m:
            if inside:
                raise ValueError(f"{name}:{lineno}: BEGIN SOLUTION inside another solution block")
            inside, n = True, n + 1
            indent = m.group(1)
            out.append(f"{indent}# YOUR CODE HERE\n{indent}raise NotImplementedError()\n")
        elif END.match(line):
            if not inside:
                raise ValueError(f"{name}:{lineno}: END SOLUTION without BEGIN")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{name}: a solution block is never closed")
    if n == 0:
        raise ValueError(f"{name}: no ### BEGIN SOLUTION block: nothing for the learner to do")
    return "".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check that exercises/ is up to date")
    args = ap.parse_args(argv)
    sources = sorted((ROOT / "solutions").glob("*.py"))
    wanted = {ROOT / "exercises" / s.name: make_stub(s.read_text(), s.name) for s in sources}
    stale = [p for p, text in wanted.items() if not p.is_file() or p.read_text() != text]
    extra = [p for p in (ROOT / "exercises").glob("*.py") if p not in wanted]
    if args.check:
        for p in stale:
            print(f"out of date: {p.relative_to(ROOT)}")
        for p in extra:
            print(f"no solution for: {p.relative_to(ROOT)}")
        return 1 if stale or extra else 0
    (ROOT / "exercises").mkdir(exist_ok=True)
    for p in stale:
        p.write_text(wanted[p])
        print(f"wrote {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Generate exercises/ from solutions/: every `### BEGIN SOLUTION … ### END SOLUTION` block becomes a stub.

    python scripts/make_exercises.py           # write missing or out-of-date stubs; never touch an edited file
    python scripts/make_exercises.py --force   # also replace edited files, keeping a copy in exercises/.backup/
    python scripts/make_exercises.py --check   # exit 1 if exercises/ is not exactly the generated stubs (CI)

The first line of a stub carries a short hash of the rest of the file. A file whose body still has that hash is an
untouched stub, safe to regenerate when the solutions change; any other file is the learner's work: it is kept,
reported, and the script exits with status 1. Only --force replaces it, after copying it to
exercises/.backup/<name>.<UTC time>.py. The output is byte-stable, so --check is a plain comparison.
"""

import argparse
import hashlib
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN = re.compile(r"^(\s*)### BEGIN SOLUTION\s*$")
END = re.compile(r"^\s*### END SOLUTION\s*$")
HEADER = ("# GENERATED from solutions/{name} by scripts/make_exercises.py (stub {digest}): this is your file, "
          "fill in the stubs.\n")
HEADER_RE = re.compile(r"^# GENERATED from solutions/\S+ by scripts/make_exercises\.py \(stub ([0-9a-f]{12})\)")
BACKUP = ".backup"  # under exercises/: outside the exercises/*.py that --check and the grader read


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:12]


def make_stub(text: str, name: str) -> str:
    out, inside, n = [], False, 0
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
    body = "".join(out)
    return HEADER.format(name=name, digest=_digest(body)) + body


def is_untouched_stub(text: str) -> bool:
    """True when `text` is a stub exactly as this script wrote it (from any version of the solutions)."""
    first, _, body = text.partition("\n")
    m = HEADER_RE.match(first)
    return bool(m) and m.group(1) == _digest(body)


def backup(path: Path) -> Path:
    """Copy an exercise file to exercises/.backup/<stem>.<UTC time>.py (never over an earlier backup)."""
    folder = path.parent / BACKUP
    folder.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest, n = folder / f"{path.stem}.{stamp}.py", 1
    while dest.exists():
        n += 1
        dest = folder / f"{path.stem}.{stamp}-{n}.py"
    shutil.copy2(path, dest)
    return dest


def main(argv=None, root: Path = ROOT) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="only check that exercises/ is exactly the generated stubs")
    mode.add_argument("--force", action="store_true", help="also replace edited files (a backup is kept in "
                                                           f"exercises/{BACKUP}/)")
    args = ap.parse_args(argv)
    sources = sorted((root / "solutions").glob("*.py"))
    wanted = {root / "exercises" / s.name: make_stub(s.read_text(), s.name) for s in sources}
    stale = [p for p, text in wanted.items() if not p.is_file() or p.read_text() != text]
    if args.check:
        extra = [p for p in (root / "exercises").glob("*.py") if p not in wanted]
        for p in stale:
            print(f"out of date: {p.relative_to(root)}")
        for p in extra:
            print(f"no solution for: {p.relative_to(root)}")
        return 1 if stale or extra else 0
    (root / "exercises").mkdir(exist_ok=True)
    kept = []
    for p in stale:
        if p.is_file() and not is_untouched_stub(p.read_text()):  # the learner's work
            if not args.force:
                kept.append(p)
                continue
            print(f"backed up {p.relative_to(root)} to {backup(p).relative_to(root)}")
        p.write_text(wanted[p])
        print(f"wrote {p.relative_to(root)}")
    for p in kept:
        print(f"kept {p.relative_to(root)}: you edited it, so it was not replaced by the new stub. "
              f"Run with --force to replace it (your version is then kept in exercises/{BACKUP}/).", file=sys.stderr)
    return 1 if kept else 0


if __name__ == "__main__":
    sys.exit(main())

"""How long grading takes, side by side with importing the package (the course's target: grading one chapter costs at
most 3x `python -c "import minillama4"`, and check() answers in about a second once its worker is up).

    python bench/grading_speed.py [--repeats 3] [--impl solutions]

Prints, per chapter, the median wall time of `python -m minillama4 grade N` and its ratio to the import, then the
time of a first check() in a fresh process (worker start included) and of a second one.
"""

import argparse
import statistics
import subprocess
import sys
import time


def wall(argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


CHECK_TWICE = """
import time
from minillama4.course.grading import run
t0 = time.perf_counter(); run("swiglu", impl="{impl}"); t1 = time.perf_counter(); run("swiglu", impl="{impl}")
print(t1 - t0, time.perf_counter() - t1)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--impl", choices=["exercises", "solutions"], default="solutions")
    args = ap.parse_args()
    from minillama4.course.grading import CHAPTERS

    base = wall([sys.executable, "-c", "import minillama4"], args.repeats)
    print(f"python -c 'import minillama4': {base:.2f} s (median of {args.repeats})")
    print(f"{'chapter':<28}{'grade N (s)':>12}{'/ import':>10}")
    for ch, stem in sorted(CHAPTERS.items()):
        t = wall([sys.executable, "-m", "minillama4", "grade", str(ch), "--impl", args.impl], args.repeats)
        print(f"{ch:02d} {stem[5:]:<25}{t:>12.2f}{t / base:>9.2f}x")
    out = subprocess.run([sys.executable, "-c", CHECK_TWICE.format(impl=args.impl)], capture_output=True, text=True)
    first, second = map(float, out.stdout.split())
    print(f"check(): first call {first:.2f} s (starts the worker), next calls {second:.2f} s")


if __name__ == "__main__":
    main()

"""Extend it, chapter 13: which MetaP rule does the work? Switch off one rule at a time and re-run the coordinate
check.

`metap.scales` reads each group's multipliers from `metap.init_multiplier` and `metap.lr_multiplier`; an ablation
wraps one of them so that one group falls back to the standard value 1 for that rule (every other group and rule
keeps MetaP's):

    no hidden init    q, k, v, gate/up start at std 0.02 instead of 0.02/√m
    no hidden lr      q, k, v, gate/up train at η instead of η/m
    no readout init   lm_head starts at std 0.02 instead of 0.02/m
    no readout lr     lm_head trains at η instead of η/m

For each, `coord_check` trains widths 16 → 128 (two layers, a few AdamW steps) and prints the log-log slope against
width of each layer's output and of the logits: their change since init and their size. About 0 means the same size
at every width; about 1, in proportion to the width.

    python solutions/extend/ch13_ablate_rules.py       # MINILLAMA4_PROFILE=ci for a short run
"""

from contextlib import contextmanager

from minillama4 import metap
from minillama4.course.metap_experiments import coord_check
from minillama4.course.profile import by_profile

WIDTHS = by_profile(ci=(16, 32, 64, 128), laptop=(16, 32, 64, 128, 256))
INIT, LR = metap.init_multiplier, metap.lr_multiplier


def off(rule, group):
    """`rule` with `group`'s multiplier set back to the standard 1."""
    return lambda g, m, d: 1.0 if g == group else rule(g, m, d)


ABLATIONS = {  # name → (init rule, lr rule)
    "metap": (INIT, LR),
    "no hidden init": (off(INIT, "hidden"), LR),
    "no hidden lr": (INIT, off(LR, "hidden")),
    "no readout init": (off(INIT, "readout"), LR),
    "no readout lr": (INIT, off(LR, "readout")),
}


@contextmanager
def rules(init, lr):
    """metap.scales uses these rules inside the block."""
    metap.init_multiplier, metap.lr_multiplier = init, lr
    try:
        yield
    finally:
        metap.init_multiplier, metap.lr_multiplier = INIT, LR


def main():
    results = {}
    for name, (init, lr) in ABLATIONS.items():
        with rules(init, lr):
            results[name] = coord_check("metap", WIDTHS)
    names = list(results["metap"]["delta"])
    print(f"coordinate check, widths {WIDTHS}: log-log slope against width (0 = flat, 1 = proportional)")
    print(f"{'':16s}" + "".join(f"{'change ' + n:>15s}" for n in names) + f"{'size logits':>13s}")
    for name, r in results.items():
        print(f"{name:16s}" + "".join(f"{r['slope']['delta'][n]:>+15.2f}" for n in names)
              + f"{r['slope']['rms']['logits']:>+13.2f}")


if __name__ == "__main__":
    main()

"""One switch that scales every experiment: MINILLAMA4_PROFILE = ci | laptop | gpu (default laptop).

`ci` is the smallest setting at which each chapter's claims still hold (CI runs every test and notebook under it on
2 cores); `laptop`, the default, is what a learner runs (longer training), and the committed notebook outputs come
from one execution of every chapter under it; `gpu` trains longer where a GPU makes that cheap.
"""

import os

PROFILES = ("ci", "laptop", "gpu")


def current_profile() -> str:
    name = os.environ.get("MINILLAMA4_PROFILE", "laptop")
    if name not in PROFILES:
        raise ValueError(f"MINILLAMA4_PROFILE={name!r}; choose one of {', '.join(PROFILES)}")
    return name


def by_profile(ci, laptop, gpu=None, profile: str | None = None):
    """The value for the current (or given) profile; gpu defaults to the laptop value."""
    p = profile or current_profile()
    if p not in PROFILES:
        raise ValueError(f"unknown profile {p!r}; choose one of {', '.join(PROFILES)}")
    return {"ci": ci, "laptop": laptop, "gpu": laptop if gpu is None else gpu}[p]

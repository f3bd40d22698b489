"""Test-wide settings. Hypothesis: with CI=true, hypothesis loads its built-in ``ci``
profile (derandomized, no database); our profiles build on it with ``deadline=None``
because numpy-heavy examples on 2 cores have no stable timing."""
import os

from hypothesis import settings

settings.register_profile("handgrad-ci", parent=settings.get_profile("ci"), deadline=None)
settings.register_profile("handgrad-dev", deadline=None, max_examples=50)
settings.load_profile("handgrad-ci" if os.environ.get("CI") else "handgrad-dev")

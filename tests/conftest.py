"""Shared pytest set-up: hypothesis profiles.

- default: 60 random examples per property test;
- ci (when $CI is set): the same count, derandomized, so a CI run is reproducible;
- fuzz: `HYPOTHESIS_PROFILE=fuzz pytest -k property` for a long search.
"""
import os
from hypothesis import HealthCheck, settings

settings.register_profile('default', max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile('ci', parent=settings.get_profile('default'), derandomize=True)
settings.register_profile('fuzz', parent=settings.get_profile('default'), max_examples=3000)
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'ci' if os.environ.get('CI') else 'default'))

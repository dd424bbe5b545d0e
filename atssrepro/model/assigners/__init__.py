"""The prediction-aware assigners: TAL, SimOTA, OTA, DSL and PAA.

Each reads the network's detached predictions as well as the boxes (:class:`AssignInputs`) and
returns an :class:`Assignment`; each equals its reference implementation on the same inputs
(docs/assignment.md, docs/semantics.md). The static assigners are in :mod:`atssrepro.model.assign`.
"""

from atssrepro.model.assigners.common import AssignInputs, Assignment
from atssrepro.model.assigners.dsl import dsl
from atssrepro.model.assigners.ota import ota
from atssrepro.model.assigners.paa import paa
from atssrepro.model.assigners.simota import simota
from atssrepro.model.assigners.tal import tal

__all__ = ["AssignInputs", "Assignment", "dsl", "ota", "paa", "simota", "tal"]

"""The synthetic org: a deterministic, realistic and deliberately hard stand-in for a Salesforce org.

Every user has a true persona (written to truth files outside the org) that drives their activity; the
persona behaviour table is `sandbox.generate.profiles`; the recipe is `sandbox.generate.org`.
"""

from sandbox.generate.org import (PRESETS, GenerationOptions, GenerationReport, InvalidGenerationRequest, Preset,
                                  generate_org, write_truth)
from sandbox.generate.profiles import PERSONA_LABELS
from sandbox.generate.worlds import InvalidWorld, World

__all__ = ["PERSONA_LABELS", "PRESETS", "GenerationOptions", "GenerationReport", "InvalidGenerationRequest",
           "InvalidWorld", "Preset", "World", "generate_org", "write_truth"]

"""A family of worlds: the habits an org is generated under, each drawn from a documented range.

Why: rules tuned on one synthetic org learn that org's habits as well as its personas: how busy people
are at each kind of work, how common each persona is, whether calls carry a CallType, how logins are
recorded, which fields a team exported. A `World` fixes every such habit. `World.default()` is the org
the generator has always made (byte for byte, for the same preset, seed, as-of and options);
`World.draw(seed)` draws another member of the family from the ranges below. Numbers tuned on some
worlds are judged on others (`bench/evaluate_orgs.py` says which seeds are which).

| knob               | what it changes                                  | default world    | drawn                     |
|--------------------|--------------------------------------------------|------------------|---------------------------|
| rate_scale         | each activity kind's base rate, for all personas | 1.0 for each     | log-uniform 0.5-2x, each  |
|                    | alike (the 24 `profiles.RATE_NAMES`: calls,      |                  | kind on its own           |
|                    | cases, reports, logins_api...)                   |                  |                           |
| persona_weights    | how common each persona is (floor: 5 users each) | as profiled      | each x log-uniform 1/3-3x |
| hybrid_share       | share of users mixing in a second persona        | the options'     | uniform 0.05-0.30         |
| silent_share       | share of users who barely act (rates x0.1)       | 0.05             | uniform 0.02-0.15         |
| call_type_logged   | calls carry CallType and CallDurationInSeconds   | yes              | yes with probability 0.6  |
| what_fill          | share of Tasks and Events that keep a WhatId     | 1.0              | uniform 0.4-1.0           |
| who_fill           | share of Tasks and Events that keep a WhoId      | 1.0              | uniform 0.4-1.0           |
| integration_logins | how API logins are recorded (see `logins`)       | api_type         | api_type 0.4,             |
|                    |                                                  |                  | connected_app 0.4,        |
|                    |                                                  |                  | mixed 0.2                 |
| mobile_logins      | how mobile-app logins are recorded (`logins`)    | salesforce_app   | salesforce_app 0.4,       |
|                    |                                                  |                  | generic_app 0.3,          |
|                    |                                                  |                  | platform_only 0.3         |
| export             | a full export, or a team's partial one           | full             | full 0.7, partial 0.3     |
| absent_objects     | objects a partial export left out: not in the    | none             | partial: each of          |
|                    | global describe, not queryable                   |                  | OPTIONAL_OBJECTS with     |
|                    |                                                  |                  | probability 0.5, >= 1     |
| absent_fields      | fields a partial export left out: not in their   | none             | partial: each of          |
|                    | object's describe, not queryable                 |                  | OPTIONAL_FIELDS with      |
|                    |                                                  |                  | probability 0.5, >= 1     |

Noise (per-user scatter) stays a `GenerationOptions` setting: it is how hard an org is to read, not a
habit of the org.

A world is fixed by its seed. Each knob is drawn from a random stream of its own, `[seed,
crc32("world:<knob>")]`, apart from the org's streams (`RandomStreams`: `[seed, crc32(step), part]`), so
the org seed and the world seed may be the same number, and adding a knob later leaves the other knobs'
draws as they were. Knobs that only change how records are written (fill rates, login conventions) draw
their per-row decisions from org streams of their own too, so switching one of them changes those
columns and nothing else.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import asdict, dataclass, replace

import numpy as np

from sandbox.generate import profiles as P

INTEGRATION_LOGINS: tuple[str, ...] = ("api_type", "connected_app", "mixed")
MOBILE_LOGINS: tuple[str, ...] = ("salesforce_app", "generic_app", "platform_only")
EXPORTS: tuple[str, ...] = ("full", "partial")

# What a team's partial Data Loader export may leave out: objects nobody thought to export, and fields
# left off the export's field list (an owner where the creator is there, the call details).
OPTIONAL_OBJECTS: tuple[str, ...] = ("KnowledgeArticleVersion", "ListEmail", "Quote", "Contract", "CaseHistory",
                                     "FeedItem")
OPTIONAL_FIELDS: tuple[str, ...] = ("ListEmail.OwnerId", "EmailTemplate.OwnerId", "Task.CallType",
                                    "Task.CallDurationInSeconds", "Opportunity.LastStageChangeDate",
                                    "User.FederationIdentifier")

# The drawn ranges (see the table above).
RATE_SCALE_RANGE = (0.5, 2.0)
PERSONA_WEIGHT_FACTOR_RANGE = (1 / 3, 3.0)
HYBRID_SHARE_RANGE = (0.05, 0.30)
SILENT_SHARE_RANGE = (0.02, 0.15)
CALL_TYPE_LOGGED_PROBABILITY = 0.6
FILL_RANGE = (0.4, 1.0)
INTEGRATION_LOGIN_ODDS = (0.4, 0.4, 0.2)
MOBILE_LOGIN_ODDS = (0.4, 0.3, 0.3)
PARTIAL_EXPORT_PROBABILITY = 0.3
ABSENT_PROBABILITY = 0.5

DEFAULT_SILENT_SHARE = 0.05


class InvalidWorld(ValueError):
    """A world whose knobs are out of range or unknown; the message names the knob and what it accepts."""


@dataclass(frozen=True)
class World:
    """Every habit of one generated org. Build one with `default()`, `draw(seed)` or `from_settings`.

    `rate_scale` is in `profiles.RATE_NAMES` order, `persona_weights` in `profiles.PERSONAS` order;
    `absent_fields` are `Object.Field` names. `seed` is None for the default world.
    """

    seed: int | None
    rate_scale: tuple[float, ...]
    persona_weights: tuple[float, ...]
    hybrid_share: float | None  # None: GenerationOptions.hybrid_share decides (the default world)
    silent_share: float
    call_type_logged: bool
    what_fill: float
    who_fill: float
    integration_logins: str
    mobile_logins: str
    export: str
    absent_objects: tuple[str, ...]
    absent_fields: tuple[str, ...]

    @classmethod
    def default(cls) -> "World":
        """Today's org: every rate as profiled, every field filled and exported, the original login habits."""
        return cls(seed=None, rate_scale=(1.0,) * len(P.RATE_NAMES),
                   persona_weights=tuple(p.weight for p in P.PERSONAS), hybrid_share=None,
                   silent_share=DEFAULT_SILENT_SHARE, call_type_logged=True, what_fill=1.0, who_fill=1.0,
                   integration_logins="api_type", mobile_logins="salesforce_app", export="full",
                   absent_objects=(), absent_fields=())

    @classmethod
    def draw(cls, seed: int, *, export: str | None = None) -> "World":
        """The world of `seed`, drawn from the ranges in the module docstring; the same seed, the same world.

        `export` forces the export preset ("full" or "partial") and leaves every other knob as drawn; a
        forced partial export leaves out what that seed's partial export would.
        """
        if seed < 0:
            raise InvalidWorld(f"a world seed must be a non-negative integer, got {seed}")
        low, high = RATE_SCALE_RANGE
        rate_scale = tuple(round(float(v), 2) for v in _log_uniform(_knob(seed, "rate_scale"), low, high,
                                                                     len(P.RATE_NAMES)))
        low, high = PERSONA_WEIGHT_FACTOR_RANGE
        factors = _log_uniform(_knob(seed, "persona_weights"), low, high, len(P.PERSONAS))
        persona_weights = tuple(round(p.weight * float(f), 4) for p, f in zip(P.PERSONAS, factors))
        drawn = cls(
            seed=seed, rate_scale=rate_scale, persona_weights=persona_weights,
            hybrid_share=round(float(_knob(seed, "hybrid_share").uniform(*HYBRID_SHARE_RANGE)), 3),
            silent_share=round(float(_knob(seed, "silent_share").uniform(*SILENT_SHARE_RANGE)), 3),
            call_type_logged=bool(_knob(seed, "call_type_logged").random() < CALL_TYPE_LOGGED_PROBABILITY),
            what_fill=round(float(_knob(seed, "what_fill").uniform(*FILL_RANGE)), 3),
            who_fill=round(float(_knob(seed, "who_fill").uniform(*FILL_RANGE)), 3),
            integration_logins=_choice(_knob(seed, "integration_logins"), INTEGRATION_LOGINS, INTEGRATION_LOGIN_ODDS),
            mobile_logins=_choice(_knob(seed, "mobile_logins"), MOBILE_LOGINS, MOBILE_LOGIN_ODDS),
            export="full", absent_objects=(), absent_fields=(),
        )
        partial = _knob(seed, "export").random() < PARTIAL_EXPORT_PROBABILITY
        return drawn.exported(export or ("partial" if partial else "full"))

    def exported(self, preset: str) -> "World":
        """This world with export preset `preset`: "full" leaves nothing out; "partial" leaves out what this
        world's seed draws (for the default world, which has no seed: every optional object and field).
        A field of an object left out is not listed again."""
        if preset not in EXPORTS:
            raise InvalidWorld(f"export must be one of {', '.join(EXPORTS)}, got {preset!r}")
        if preset == "full":
            return replace(self, export="full", absent_objects=(), absent_fields=())
        if self.seed is None:
            return replace(self, export="partial", absent_objects=OPTIONAL_OBJECTS,
                           absent_fields=tuple(name for name in OPTIONAL_FIELDS
                                               if name.split(".")[0] not in OPTIONAL_OBJECTS))
        objects = _some_of(_knob(self.seed, "absent_objects"), OPTIONAL_OBJECTS)
        fields = _some_of(_knob(self.seed, "absent_fields"), OPTIONAL_FIELDS)
        return replace(self, export="partial", absent_objects=objects,
                       absent_fields=tuple(name for name in fields if name.split(".")[0] not in objects))

    @classmethod
    def named(cls, name: str, *, export: str | None = None) -> "World":
        """The world a command line names: "default", a seed to draw from (e.g. "1001"), or a world's saved
        JSON (`to_settings`, what a parent process hands its sandbox child). `export` forces the export."""
        text = name.strip().lower()
        if text.startswith("{"):
            world = cls.from_settings(name)
        elif text == "default":
            world = cls.default()
        elif text.isdigit():
            return cls.draw(int(text), export=export)
        else:
            raise InvalidWorld(f"a world is 'default' or a non-negative integer seed, got {name!r}")
        return world.exported(export) if export else world

    # --- reading the knobs -----------------------------------------------------------------------

    @property
    def name(self) -> str:
        """"default" or the seed, with "-partial" when the export is partial: short, for paths and logs."""
        base = "default" if self.seed is None else str(self.seed)
        return base + ("-partial" if self.export == "partial" else "")

    def rate_scales(self) -> np.ndarray:
        """`rate_scale` as an array in `profiles.RATE_NAMES` order (one factor per rate column)."""
        return np.array(self.rate_scale, dtype=float)

    def scale_of(self, rate: str) -> float:
        """The factor on rate `rate` (a name of `profiles.RATE_NAMES`)."""
        return self.rate_scale[P.rate_column(rate)]

    def hybrid_share_or(self, options_share: float) -> float:
        """The hybrid share this world generates with: its own when drawn, else the options' one."""
        return options_share if self.hybrid_share is None else self.hybrid_share

    def check(self) -> None:
        """Raises InvalidWorld naming the first knob out of range (for worlds built by hand with `replace`)."""
        if len(self.rate_scale) != len(P.RATE_NAMES) or not all(0 < v <= 10 for v in self.rate_scale):
            raise InvalidWorld(f"rate_scale needs {len(P.RATE_NAMES)} factors in (0, 10], got {self.rate_scale}")
        if len(self.persona_weights) != len(P.PERSONAS) or not all(w > 0 for w in self.persona_weights):
            raise InvalidWorld(f"persona_weights needs {len(P.PERSONAS)} positive weights, got {self.persona_weights}")
        for knob in ("silent_share", "what_fill", "who_fill"):
            if not 0.0 <= getattr(self, knob) <= 1.0:
                raise InvalidWorld(f"{knob} must be between 0 and 1, got {getattr(self, knob)}")
        if self.hybrid_share is not None and not 0.0 <= self.hybrid_share <= 1.0:
            raise InvalidWorld(f"hybrid_share must be between 0 and 1, got {self.hybrid_share}")
        for knob, allowed in (("integration_logins", INTEGRATION_LOGINS), ("mobile_logins", MOBILE_LOGINS),
                              ("export", EXPORTS)):
            if getattr(self, knob) not in allowed:
                raise InvalidWorld(f"{knob} must be one of {', '.join(allowed)}, got {getattr(self, knob)!r}")
        unknown = sorted(set(self.absent_objects) - set(OPTIONAL_OBJECTS)) + \
            sorted(set(self.absent_fields) - set(OPTIONAL_FIELDS))
        if unknown:
            raise InvalidWorld(f"only optional objects and fields can be absent ({', '.join(OPTIONAL_OBJECTS)}; "
                               f"{', '.join(OPTIONAL_FIELDS)}), got {unknown}")
        if self.export == "full" and (self.absent_objects or self.absent_fields):
            raise InvalidWorld("a full export leaves nothing out; use export='partial' for absent objects or fields")

    def summary(self) -> str:
        """The world on one line: its name, then its knobs (`knobs`)."""
        return f"world {self.name}: {self.knobs()}"

    def knobs(self) -> str:
        """The knobs on one line: the extreme rate factors, shares, conventions and what is absent."""
        scales = self.rate_scales()
        low, high = int(np.argmin(scales)), int(np.argmax(scales))
        hybrids = "options'" if self.hybrid_share is None else f"{self.hybrid_share:.2f}"
        absent = ""
        if self.export == "partial":
            absent = " (no " + ", ".join([*self.absent_objects, *self.absent_fields]) + ")"
        return (f"rates x{scales[low]:.2f} ({P.RATE_NAMES[low]}) .. x{scales[high]:.2f} "
                f"({P.RATE_NAMES[high]}); hybrids {hybrids}, silent {self.silent_share:.2f}; "
                f"CallType {'yes' if self.call_type_logged else 'no'}; What {self.what_fill:.2f} "
                f"Who {self.who_fill:.2f}; logins: API {self.integration_logins}, mobile {self.mobile_logins}; "
                f"export {self.export}{absent}")

    # --- saving in the org ----------------------------------------------------------------------

    def to_settings(self) -> str:
        """The world as JSON (rates and weights by name), for the org's settings: an org says its world."""
        values = asdict(self)
        values["rate_scale"] = dict(zip(P.RATE_NAMES, self.rate_scale))
        values["persona_weights"] = dict(zip(P.PERSONA_LABELS, self.persona_weights))
        return json.dumps(values, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_settings(cls, text: str) -> "World":
        """The world `to_settings` saved; raises InvalidWorld when the text is not one (another version's)."""
        try:
            values = json.loads(text)
            values["rate_scale"] = tuple(float(values["rate_scale"][name]) for name in P.RATE_NAMES)
            values["persona_weights"] = tuple(float(values["persona_weights"][label]) for label in P.PERSONA_LABELS)
            values["absent_objects"] = tuple(values["absent_objects"])
            values["absent_fields"] = tuple(values["absent_fields"])
            world = cls(**values)
        except (ValueError, KeyError, TypeError) as error:
            raise InvalidWorld(f"not a saved world ({error}); regenerate the org") from error
        world.check()
        return world


def _knob(seed: int, knob: str) -> np.random.Generator:
    """The random stream one knob of world `seed` is drawn from (two entries: never an org stream)."""
    return np.random.default_rng([seed, zlib.crc32(f"world:{knob}".encode())])


def _log_uniform(rng: np.random.Generator, low: float, high: float, count: int) -> np.ndarray:
    """Factors spread evenly on a log scale between `low` and `high`: halving is as likely as doubling."""
    return np.exp(rng.uniform(math.log(low), math.log(high), count))


def _choice(rng: np.random.Generator, options: tuple[str, ...], odds: tuple[float, ...]) -> str:
    return options[int(rng.choice(len(options), p=np.array(odds) / sum(odds)))]


def _some_of(rng: np.random.Generator, names: tuple[str, ...]) -> tuple[str, ...]:
    """Each name with probability ABSENT_PROBABILITY, at least one (a partial export leaves something out)."""
    chosen = rng.random(len(names)) < ABSENT_PROBABILITY
    if not chosen.any():
        chosen[rng.integers(0, len(names))] = True
    return tuple(name for name, keep in zip(names, chosen) if keep)

"""How the synthetic bank's customers respond to what the bank delivers (``world.py`` steps it).

Each customer has, per need, a hidden **response type**:

- *persuadable*: a contact raises her hazard of applying for a few weeks;
- *sure thing*: she applies at her own pace, contact or not;
- *lost cause*: she hardly ever applies (her hazard is a tenth of what her situation says);
- *do not disturb*: a contact lowers her hazard for weeks and she is quick to complain or
  withdraw her consent.

Customers living a situation that drives a need are more often sure things for it (they were
going to apply), which is what a propensity model finds and an uplift policy avoids.

The size of a persuadable customer's response depends on the **channel's fit** to her (the young
read the app, the older answer the phone or walk into the branch, the affluent see their RM),
the **local hour** (a call or an SMS at night does harm) and **fatigue** (many recent contacts
wear the effect off, and then turn it against the bank). Whether she sees the contact at all
depends on the channel. Every number here is a modelling choice, written once.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from consent.rules.vocabulary import CONTACT_CHANNELS

PERSUADABLE, SURE_THING, LOST_CAUSE, DO_NOT_DISTURB = 0, 1, 2, 3
TYPES: Final = ("persuadable", "sure_thing", "lost_cause", "do_not_disturb")
#: Type mix for a need the customer's situation drives, and for the others.
MIX_IN_SITUATION: Final = (0.30, 0.40, 0.20, 0.10)
MIX_OTHERWISE: Final = (0.35, 0.05, 0.48, 0.12)
#: A lost cause's hazard, relative to what her situation says.
LOST_CAUSE_FACTOR: Final = 0.1

CHANNEL: Final[dict[str, int]] = {name: i for i, name in enumerate(CONTACT_CHANNELS)}
#: The chance that a delivered action is seen at all, per channel.
SEEN: Final = {
    "mobile_app": 0.55,
    "web": 0.35,
    "email": 0.30,
    "sms": 0.85,
    "phone": 0.50,
    "rm": 0.90,
    "branch": 0.50,
}
#: Channels whose contact is a meeting: the hour it is booked for suits the customer.
MEETINGS: Final = frozenset({"rm", "branch"})

#: How much a seen contact multiplies a persuadable customer's hazard at best, how long it
#: lasts, and what it leaves of a do-not-disturb customer's.
PERSUASION: Final = 4.0
EFFECT_DAYS: Final = 21
DISTURBED: Final = 0.3
#: Seen contacts in this many days make her tired of the bank.
FATIGUE_DAYS: Final = 14
#: The contacts after which a persuadable customer is no longer moved.
WORN_OUT: Final = 6

#: Given a seen contact, by type: accepts, declines (the rest dismiss or ignore it).
ACCEPT: Final = np.array([0.30, 0.35, 0.03, 0.01])
DECLINE: Final = np.array([0.30, 0.30, 0.50, 0.60])
#: Complaint and withdrawal of marketing consent per seen contact, before fatigue and hour.
COMPLAIN: Final = np.array([0.002, 0.002, 0.003, 0.06])
OPT_OUT: Final = np.array([0.002, 0.002, 0.004, 0.05])


def types(rng: np.random.Generator, in_situation: np.ndarray) -> np.ndarray:
    """[customer, need] response type, from whether a situation drives the need."""
    draw = rng.random(in_situation.shape)
    inside = np.searchsorted(np.cumsum(MIX_IN_SITUATION), draw, side="right")
    outside = np.searchsorted(np.cumsum(MIX_OTHERWISE), draw, side="right")
    return np.minimum(np.where(in_situation, inside, outside), 3).astype(np.int8)


def channel_fit(age: np.ndarray, segment: np.ndarray, login_rate: np.ndarray) -> np.ndarray:
    """[customer, channel] how well each channel reaches her, in (0, 1]."""
    n = len(age)
    fit = np.full((n, len(CONTACT_CHANNELS)), 0.4)
    young = np.clip((60 - age) / 40, 0, 1)
    online = np.clip(login_rate / 0.8, 0, 1)
    fit[:, CHANNEL["mobile_app"]] = 0.2 + 0.8 * np.maximum(young, online)
    fit[:, CHANNEL["web"]] = 0.3 + 0.5 * online
    fit[:, CHANNEL["email"]] = 0.4
    fit[:, CHANNEL["sms"]] = 0.3 + 0.3 * young
    fit[:, CHANNEL["phone"]] = 0.3 + 0.6 * (1 - young)
    fit[:, CHANNEL["branch"]] = 0.3 + 0.6 * (1 - young)
    fit[:, CHANNEL["rm"]] = np.where(segment >= 1, 1.0, 0.5)
    clipped: np.ndarray = np.clip(fit, 0.05, 1.0)
    return clipped


def hour_fit(channel: str, local_hour: np.ndarray) -> np.ndarray:
    """1 in waking hours (08:00-21:00 local) or for a meeting; 0.4 otherwise."""
    if channel in MEETINGS:
        return np.ones(len(local_hour))
    awake = (local_hour >= 8) & (local_hour < 21)
    return np.where(awake, 1.0, 0.4)


def fatigue(recent: np.ndarray) -> np.ndarray:
    """How much of a persuadable customer's response is left after ``recent`` seen contacts."""
    left = 1.0 / (1.0 + 0.4 * np.maximum(recent - 2, 0))
    return np.where(recent >= WORN_OUT, 0.0, left)


def multiplier(
    kind: np.ndarray, fit: np.ndarray, hour: np.ndarray, recent: np.ndarray
) -> np.ndarray:
    """The factor on her hazard for ``EFFECT_DAYS`` after a seen contact."""
    persuaded = 1.0 + PERSUASION * fit * hour * fatigue(recent)
    # Worn out, or contacted at night, a persuadable customer is put off a little too.
    persuaded = np.where((recent >= WORN_OUT) | (hour < 1.0), np.minimum(persuaded, 0.8), persuaded)
    return np.select(
        [kind == PERSUADABLE, kind == DO_NOT_DISTURB], [persuaded, DISTURBED], default=1.0
    )


def harm_factor(hour: np.ndarray, recent: np.ndarray) -> np.ndarray:
    """Complaints and opt-outs grow with fatigue and at night."""
    return (1.0 + recent / 3.0) * np.where(hour < 1.0, 3.0, 1.0)

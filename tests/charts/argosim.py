"""A small model of how Argo CD brings up the bundle's child Applications, for the ordering tests.

It models exactly what the tests need, from the rendered objects and Argo CD's documented
behaviour, and nothing more:
- the root Application applies the children wave by wave and starts wave N+1 only once every
  child of wave N reads Healthy through the health check the bootstrap installs (a child is
  Healthy once its own sync succeeded and its workloads came up: `ready_after` seconds);
- a child's sync fails while a custom resource kind it applies is not served yet, or while a
  Secret its credentials Job copies does not exist yet (the Job gives up, the PreSync hook fails);
  it is then retried after backoff.duration * factor^n, capped at maxDuration, up to `limit`
  times (-1: without limit), as in controller/appcontroller.go;
- `ordered=False` is the worst case: every child exists at once (the health check did not take,
  or a user synced children by hand), so only the retries bring it together.
Durations of real pulls and starts are not known here; `ready_after` is a parameter and the
tests state what they assume.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_DURATION = re.compile(r"(\d+)(h|m|s)")


def seconds(text: str) -> float:
    return sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in _DURATION.findall(text))


@dataclass
class Retry:
    limit: int
    duration: float
    factor: float
    max_duration: float

    @classmethod
    def from_application(cls, app_doc: dict) -> "Retry":
        retry = app_doc["spec"]["syncPolicy"].get("retry") or {"limit": 0, "backoff": {}}
        backoff = retry.get("backoff", {})
        return cls(int(retry.get("limit", 0)), seconds(backoff.get("duration", "5s")),
                   float(backoff.get("factor", 2)), seconds(backoff.get("maxDuration", "3m")))

    def delay(self, attempt: int) -> float:
        return min(self.duration * self.factor ** attempt, self.max_duration)


@dataclass
class Child:
    name: str
    wave: int
    retry: Retry
    needs: set[str] = field(default_factory=set)   # children that must be up before a sync can succeed


@dataclass
class Outcome:
    healthy_at: dict[str, float]          # child -> time it became Healthy
    attempts: dict[str, int]              # child -> sync attempts made
    stuck: dict[str, str]                 # child -> why it never converged


def simulate(children: dict[str, Child], ordered: bool, ready_after: float = 120.0,
             horizon: float = 6 * 3600.0) -> Outcome:
    healthy_at: dict[str, float] = {}
    attempts = {n: 0 for n in children}
    next_try: dict[str, float] = {}
    waves = sorted({c.wave for c in children.values()})
    created: dict[str, float] = {}

    def create(names, t):
        for n in names:
            created[n] = t
            next_try[n] = t

    if ordered:
        create([n for n, c in children.items() if c.wave == waves[0]], 0.0)
    else:
        create(list(children), 0.0)
    t = 0.0
    while t <= horizon and len(healthy_at) < len(children):
        due = sorted((when, n) for n, when in next_try.items() if when <= t)
        for _, n in due:
            child = children[n]
            attempts[n] += 1
            if all(d in healthy_at and healthy_at[d] <= t for d in child.needs):
                healthy_at[n] = t + ready_after
                del next_try[n]
            elif child.retry.limit < 0 or attempts[n] <= child.retry.limit:
                next_try[n] = t + child.retry.delay(attempts[n] - 1)
            else:
                del next_try[n]  # retries exhausted: Argo CD will not auto-sync this revision again
        if ordered:
            for i, wave in enumerate(waves[1:], start=1):
                this = [n for n, c in children.items() if c.wave == wave]
                before = [n for n, c in children.items() if c.wave == waves[i - 1]]
                if this[0] not in created and all(b in healthy_at and healthy_at[b] <= t for b in before):
                    create(this, t)
        t += 1.0
    stuck = {}
    for n, c in children.items():
        if n not in healthy_at:
            missing = sorted(d for d in c.needs if d not in healthy_at)
            stuck[n] = ("never created" if n not in created else
                        f"gave up after {attempts[n]} attempts, waiting for {missing}")
    return Outcome(healthy_at, attempts, stuck)

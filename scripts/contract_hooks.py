"""Schemathesis hooks of scripts/contract: what the API's contract says that its OpenAPI document
cannot, and a tally of the answers.

- JSON Schema has no way to compare two fields, so the document can only state in words that a
  room's `heartbeatIntervalSeconds` must be smaller than both idle timeouts (docs/api.md,
  RoomConfigBody). Without help, schemathesis generates PUT bodies that fit the schema but break
  that rule, and reports the `400` they rightly get as "schema-valid request rejected".
  `before_call` mends exactly those bodies, in positive cases only (a negative case is left as
  it is), keeping the values at the edge of the rule where it can. The same holds for a room's
  `events` (docs/api.md, Events): each must end after it starts, start (its pre-queue included)
  no earlier than the previous one ends, and carry a name unique in the room; `before_call` gives
  the events of a positive case back-to-back times in that order (each event and its pre-queue
  right after the previous one's end, ending an hour after its start) and renames repeated
  names. And a room's body, like every body, is at most 4 096 bytes (`413` beyond: docs/api.md);
  up to 24 events fit in the schema, but 24 with the longest names and values do not, so the
  last events of a positive case are dropped until its body fits.
- Three answers of the contract contradict generic checks, and `filter_failure` accepts exactly
  those: a schema-violating body over 4 096 bytes answered `413` with problem type
  `payload-too-large` (refused, but for its size, which is checked before the body is read: the
  generic check expects a `400`); a join answered `503` with problem type `room-full` (the room's `maxWaiting`, which the
  generated PUTs set, is reached: the contract's answer, with `Retry-After`, not a server
  fault), and a session read `200` as `EXPIRED` after its DELETE (DELETE is "leave": an ended
  session stays readable, with its reason, for 15 minutes). Every other 5xx, and every other
  read of a deleted resource, still fails the run.
- `after_call` counts the answers by status; the counts are written at exit to the file named by
  WAITROOM_CONTRACT_TALLY, for the script's summary.
"""

import atexit
import json
import os
from collections import Counter
from datetime import datetime, timedelta, timezone

import schemathesis

ROOM_PATH = "/api/waiting-room/rooms/{roomId}"
SECONDS_MAX = 86_400
HEARTBEAT = "heartbeatIntervalSeconds"
IDLE_TIMEOUTS = ("activeIdleTimeoutSeconds", "waitingIdleTimeoutSeconds")
# The defaults an omitted field takes (docs/api.md, RoomConfigBody).
DEFAULTS = {HEARTBEAT: 10, "activeIdleTimeoutSeconds": 60, "waitingIdleTimeoutSeconds": 120}


def _seconds(value):
    """A `*Seconds` value in range (an integer, perhaps written as `60.0`), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != int(value) or not 1 <= value <= SECONDS_MAX:
        return None
    return int(value)


# The request body limit (REQUEST_BODY_BYTES_MAX), less a margin for how the body is spelled.
BODY_BYTES_MAX = 4096 - 64
EVENTS_FROM = datetime(2030, 1, 1, tzinfo=timezone.utc)


def _mend_events(body):
    """Back-to-back times in list order, unique names, and no more events than fit the body."""
    events = body.get("events")
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        return
    cursor, names = EVENTS_FROM, set()
    for n, event in enumerate(events):
        # An integer, perhaps written as `232.0`; null or anything else: no pre-queue.
        minutes = event.get("preQueueMinutes")
        integral = isinstance(minutes, (int, float)) and not isinstance(minutes, bool)
        minutes = int(minutes) if integral and minutes == int(minutes) and minutes > 0 else 0
        start = cursor + timedelta(minutes=minutes + 1)
        end = start + timedelta(hours=1)
        event["startsAt"] = start.strftime("%Y-%m-%dT%H:%M:%SZ")
        event["endsAt"] = end.strftime("%Y-%m-%dT%H:%M:%SZ")
        cursor = end
        name = event.get("name")
        if isinstance(name, str) and name in names:
            event["name"] = f"e{n}-{name}"[:64]
        names.add(event.get("name"))
    while events and len(json.dumps(body)) > BODY_BYTES_MAX:
        events.pop()


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.method.upper() != "PUT" or case.operation.path != ROOM_PATH:
        return
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or not isinstance(case.body, dict):
        return
    body = case.body
    _mend_events(body)
    heartbeat = _seconds(body.get(HEARTBEAT, DEFAULTS[HEARTBEAT]))
    idles = {field: _seconds(body.get(field, DEFAULTS[field])) for field in IDLE_TIMEOUTS}
    if heartbeat is None or None in idles.values():
        return
    shortest = min(idles.values())
    if heartbeat < shortest:
        return
    if shortest >= 2:
        body[HEARTBEAT] = shortest - 1
    else:
        heartbeat = min(heartbeat, SECONDS_MAX - 1)
        body[HEARTBEAT] = heartbeat
        for field, idle in idles.items():
            if idle <= heartbeat:
                body[field] = heartbeat + 1


SESSION_PATHS = ("/api/waiting-room/sessions/{id}", "/api/waiting-room/sessions/{id}:")
PROBLEM_TYPES = "https://waitroom.dev/problems/"


def _json(response):
    try:
        return response.json()
    except Exception:
        return None


def _is_room_full(case, response):
    body = _json(response)
    return (
        case.operation.path == "/api/waiting-room/sessions"
        and case.method.upper() == "POST"
        and response.status_code == 503
        and "retry-after" in response.headers
        and isinstance(body, dict)
        and body.get("type") == PROBLEM_TYPES + "room-full"
    )


def _is_too_large(case, response):
    body = _json(response)
    return (
        response.status_code == 413
        and isinstance(body, dict)
        and body.get("type") == PROBLEM_TYPES + "payload-too-large"
    )


def _is_ended_session(case, response):
    body = _json(response)
    return (
        case.operation.path.startswith(SESSION_PATHS)
        and response.status_code == 200
        and isinstance(body, dict)
        and body.get("status") == "EXPIRED"
        and body.get("expiredReason") is not None
    )


@schemathesis.hook
def filter_failure(context, failure, case, response):
    kind = type(failure).__name__
    if kind == "ServerError" and _is_room_full(case, response):
        TALLY["room-full 503 accepted"] += 1
        return False
    if kind == "AcceptedNegativeData" and _is_too_large(case, response):
        TALLY["too-large negative body 413 accepted"] += 1
        return False
    if kind == "UseAfterFree" and _is_ended_session(case, response):
        TALLY["ended session read after DELETE accepted"] += 1
        return False
    return True


TALLY = Counter()


@schemathesis.hook
def after_call(context, case, response):
    TALLY["responses"] += 1
    TALLY[f"{response.status_code // 100}xx"] += 1
    TALLY[str(response.status_code)] += 1


@atexit.register
def _write_tally():
    path = os.environ.get("WAITROOM_CONTRACT_TALLY")
    if path:
        with open(path, "w") as out:
            json.dump(dict(TALLY), out, sort_keys=True)

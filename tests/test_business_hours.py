"""business_hours: schedules decided right (DST days, across midnight, exceptions), against a
brute-force reference; load errors with their place; hostile schedules; ``flowlang run --now``."""

from __future__ import annotations

import asyncio
import gc
import json
import zoneinfo
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from support import cli, run_python

from flowlang import load_flow_text
from flowlang.expr.backends import AVAILABLE
from flowlang.flow.load import check_flow_text
from flowlang.kinds import schedules
from flowlang.kinds.schedules import WEEKDAYS, Schedule
from flowlang.runtime.runner import Runtime


def flow_text(schedule: Any, *, named: bool = True, holiday: bool = True) -> str:
    """A flow whose step ``hours`` routes by ``schedule`` (named ``office``, or inline)."""
    document: dict[str, Any] = {"flow": "t", "start": "hours"}
    step: dict[str, Any] = {"type": "business_hours", "open": "o", "closed": "c"}
    if holiday:
        step["holiday"] = "h"
    if named:
        document["schedules"] = {"office": schedule}
        step["schedule"] = "office"
    else:
        step["schedule"] = schedule
    document["steps"] = {
        "hours": step,
        "o": {"type": "say", "text": "open"},
        "c": {"type": "say", "text": "closed"},
        "h": {"type": "say", "text": "holiday"},
    }
    return json.dumps(document, indent=1)  # JSON is YAML, without aliases for repeated items


def compiled(schedule: Any) -> Schedule:
    flow = load_flow_text(flow_text(schedule), name="t.yaml")
    found: Schedule = flow.steps["hours"].fields["schedule"]
    return found


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- daylight saving ----------------------------------------------------------------------------

PRAGUE_SPRING = {"time_zone": "Europe/Prague", "weekly": {"sunday": ["01:00-03:00"]}}
PRAGUE_FALL = {"time_zone": "Europe/Prague", "weekly": {"sunday": ["02:00-03:00"]}}
NEW_YORK = {
    "time_zone": "America/New_York",
    "weekly": {"sunday": ["01:00-02:00", "02:30-04:00"]},
}


@pytest.mark.parametrize(
    ("schedule", "instant", "outcome", "local"),
    [
        # 2026-03-29, Prague: 02:00 CET is 03:00 CEST; 02:00-03:00 local never happens.
        (PRAGUE_SPRING, "2026-03-29T00:00:00Z", "open", "2026-03-29T01:00:00+01:00"),
        (PRAGUE_SPRING, "2026-03-29T00:59:59Z", "open", "2026-03-29T01:59:59+01:00"),
        (PRAGUE_SPRING, "2026-03-29T01:00:00Z", "closed", "2026-03-29T03:00:00+02:00"),
        # 2026-10-25, Prague: 03:00 CEST is 02:00 CET; 02:00-03:00 happens twice, both inside.
        (PRAGUE_FALL, "2026-10-24T23:59:59Z", "closed", "2026-10-25T01:59:59+02:00"),
        (PRAGUE_FALL, "2026-10-25T00:00:00Z", "open", "2026-10-25T02:00:00+02:00"),
        (PRAGUE_FALL, "2026-10-25T00:59:59Z", "open", "2026-10-25T02:59:59+02:00"),
        (PRAGUE_FALL, "2026-10-25T01:00:00Z", "open", "2026-10-25T02:00:00+01:00"),
        (PRAGUE_FALL, "2026-10-25T01:59:59Z", "open", "2026-10-25T02:59:59+01:00"),
        (PRAGUE_FALL, "2026-10-25T02:00:00Z", "closed", "2026-10-25T03:00:00+01:00"),
        # 2026-03-08, New York: 02:00 EST is 03:00 EDT; 02:30-04:00 opens at 03:00 EDT.
        (NEW_YORK, "2026-03-08T05:59:59Z", "closed", "2026-03-08T00:59:59-05:00"),
        (NEW_YORK, "2026-03-08T06:30:00Z", "open", "2026-03-08T01:30:00-05:00"),
        (NEW_YORK, "2026-03-08T07:00:00Z", "open", "2026-03-08T03:00:00-04:00"),
        # 2026-11-01, New York: 01:00-02:00 happens twice, both inside.
        (NEW_YORK, "2026-11-01T05:30:00Z", "open", "2026-11-01T01:30:00-04:00"),
        (NEW_YORK, "2026-11-01T06:30:00Z", "open", "2026-11-01T01:30:00-05:00"),
        (NEW_YORK, "2026-11-01T07:00:00Z", "closed", "2026-11-01T02:00:00-05:00"),
    ],
)
def test_daylight_saving_days(
    schedule: dict[str, Any], instant: str, outcome: str, local: str
) -> None:
    decided, detail = compiled(schedule).decide(at(instant))
    assert (decided, detail["local_time"]) == (outcome, local)
    assert detail["time_zone"] == schedule["time_zone"]


def test_the_fall_back_day_is_open_an_hour_longer() -> None:
    """A whole-day interval on the fall-back day is open for 25 real hours, on the spring-forward
    day for 23: the schedule is wall-clock time, counted minute by minute."""
    whole_day = compiled({"time_zone": "Europe/Prague", "weekly": {"sunday": ["00:00-24:00"]}})

    def open_minutes(day: str) -> int:
        start = at(f"{day}T00:00:00+00:00") - timedelta(hours=3)
        minutes = (start + timedelta(minutes=step) for step in range(30 * 60))
        return sum(whole_day.decide(moment)[0] == "open" for moment in minutes)

    assert open_minutes("2026-10-25") == 25 * 60
    assert open_minutes("2026-03-29") == 23 * 60
    assert open_minutes("2026-06-07") == 24 * 60


def test_the_trace_says_the_local_time_the_zone_and_what_decided() -> None:
    schedule = compiled(
        {
            "time_zone": "Europe/Prague",
            "weekly": {"saturday": ["22:00-02:00"]},
            "exceptions": [{"date": "2026-12-24", "closed": True, "name": "Christmas Eve"}],
        }
    )
    outcome, detail = schedule.decide(at("2026-12-20T00:30:00+01:00"))
    assert outcome == "open"
    assert detail == {
        "schedule": "office",
        "time_zone": "Europe/Prague",
        "local_time": "2026-12-20T00:30:00+01:00",
        "why": "sunday 2026-12-20 00:30:00 CET in Europe/Prague: "
        "saturday 22:00-02:00 (from the day before)",
    }
    outcome, detail = schedule.decide(at("2026-12-24T09:00:00Z"))
    assert outcome == "holiday"
    assert detail["why"].endswith("exception 2026-12-24 (Christmas Eve): closed all day")


# --- the property: the outcome is what walking the local calendar gives -------------------------

ZONES = (
    "Europe/Prague",
    "America/New_York",
    "UTC",
    "Australia/Lord_Howe",  # a 30-minute daylight saving shift
    "Asia/Kathmandu",  # +05:45
    "America/St_Johns",  # -03:30 and daylight saving
    "Pacific/Apia",
)
#: Daylight saving transitions (UTC) near which instants are drawn most often.
TRANSITIONS = tuple(
    at(text)
    for text in (
        "2026-03-29T01:00:00Z",
        "2026-10-25T01:00:00Z",
        "2026-03-08T07:00:00Z",
        "2026-11-01T06:00:00Z",
        "2026-04-04T15:00:00Z",
        "2026-10-03T15:30:00Z",
        "2026-03-08T05:30:00Z",
        "2026-11-01T04:30:00Z",
    )
)


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@st.composite
def day_intervals(draw: st.DrawFn) -> list[str]:
    """Non-overlapping intervals on a 15-minute grid; the last may run across midnight."""
    marks = sorted(draw(st.sets(st.integers(0, 96), max_size=8)))
    marks = marks[: len(marks) // 2 * 2]
    out = [f"{_clock(marks[i] * 15)}-{_clock(marks[i + 1] * 15)}" for i in range(0, len(marks), 2)]
    last = marks[-1] if marks else 0
    if last < 95 and draw(st.booleans()):
        start = draw(st.integers(last + 1, 95))
        end = draw(st.integers(0, start - 1))
        out.append(f"{_clock(start * 15)}-{_clock(end * 15)}")
    return out


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, Any], datetime]:
    zone = draw(st.sampled_from(ZONES))
    if draw(st.booleans()):
        base = draw(st.sampled_from(TRANSITIONS))
    else:
        base = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=draw(st.integers(0, 729)))
    instant = base + timedelta(seconds=draw(st.integers(-2 * 86400, 2 * 86400)))
    weekly = {day: draw(day_intervals()) for day in WEEKDAYS if draw(st.booleans())}
    today = instant.astimezone(zoneinfo.ZoneInfo(zone)).date()
    exceptions = []
    for day in (today - timedelta(days=1), today, today + timedelta(days=1)):
        kind = draw(st.sampled_from(("none", "closed", "hours")))
        if kind == "closed":
            exceptions.append({"date": day.isoformat(), "closed": True})
        elif kind == "hours":
            hours = draw(day_intervals()) or ["10:00-11:00"]
            exceptions.append({"date": day.isoformat(), "hours": hours})
    return {"time_zone": zone, "weekly": weekly, "exceptions": exceptions}, instant


def reference(schedule: dict[str, Any], instant: datetime) -> str:
    """The outcome by walking the local calendar: each interval of the day before and of the
    day becomes a span of naive local wall-clock datetimes, compared with the wall time."""
    wall = instant.astimezone(zoneinfo.ZoneInfo(schedule["time_zone"])).replace(tzinfo=None)
    today = wall.date()
    dated = {date.fromisoformat(item["date"]): item for item in schedule["exceptions"]}

    def spans(day: date) -> list[tuple[datetime, datetime]]:
        if day in dated:
            texts = dated[day].get("hours", [])
        else:
            texts = schedule["weekly"].get(WEEKDAYS[day.weekday()], [])
        midnight = datetime.combine(day, time())
        out = []
        for text in texts:
            start = midnight + timedelta(hours=int(text[:2]), minutes=int(text[3:5]))
            end = midnight + timedelta(hours=int(text[6:8]), minutes=int(text[9:]))
            out.append((start, end if end > start else end + timedelta(days=1)))
        return out

    if today in dated:
        inside = any(start <= wall < end for start, end in spans(today))
        return "open" if inside else "holiday"
    for day in (today - timedelta(days=1), today):
        if any(start <= wall < end for start, end in spans(day)):
            return "open"
    return "closed"


@given(cases())
def test_the_outcome_is_the_reference_walk_of_the_calendar(
    case: tuple[dict[str, Any], datetime],
) -> None:
    schedule, instant = case
    assert compiled(schedule).decide(instant)[0] == reference(schedule, instant)


# --- both loops and the clock -------------------------------------------------------------------


def run(text: str, clock: Any, backend: str) -> Any:
    flow = load_flow_text(text, name="t.yaml")

    async def main() -> Any:
        async with Runtime(clock=clock, backend=backend) as runtime:
            return await runtime.start(flow, {})

    return asyncio.run(main())


@pytest.mark.parametrize("backend", AVAILABLE)
def test_a_clock_without_an_offset_fails_the_run_with_a_clear_error(backend: str) -> None:
    text = flow_text({"time_zone": "UTC", "weekly": {}})
    result = run(text, lambda: datetime(2026, 12, 24, 10), backend)
    assert result.status == "failed"
    assert "not an aware datetime" in (result.error or "")


@pytest.mark.parametrize("backend", AVAILABLE)
def test_the_default_clock_is_now(backend: str) -> None:
    text = flow_text({"time_zone": "UTC", "weekly": {day: ["00:00-24:00"] for day in WEEKDAYS}})
    result = run(text, None, backend)
    assert [row["outcome"] for row in result.trace] == ["open", "said"]
    local = datetime.fromisoformat(result.trace[0]["detail"]["local_time"])
    assert abs(local - datetime.now(UTC)) < timedelta(days=1)


def test_a_named_schedule_is_read_once_for_every_step_that_uses_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[str | None] = []
    original = schedules.ScheduleReader.schedule

    def counted(self: Any, name: Any, *rest: Any) -> Any:
        reads.append(name)
        return original(self, name, *rest)

    monkeypatch.setattr(schedules.ScheduleReader, "schedule", counted)
    document = {
        "flow": "t",
        "start": "a",
        "schedules": {"office": {"time_zone": "UTC", "weekly": {"monday": ["25:00-26:00"]}}},
        "steps": {
            "a": {"type": "business_hours", "schedule": "office", "open": "b", "closed": "b"},
            "b": {"type": "business_hours", "schedule": "office", "open": "c", "closed": "c"},
            "c": {"type": "hangup"},
        },
    }
    _, findings = check_flow_text(yaml.safe_dump(document, sort_keys=False), name="t.yaml")
    assert reads == ["office"]
    assert [finding.message for finding in findings] == [
        "interval '25:00-26:00': hour 25 is out of range (00-23; 24:00 ends a day)"
    ]


# --- load errors, with their place -------------------------------------------------------------

BASE = """\
flow: t
start: hours
schedules:
  office:
    time_zone: Europe/Prague
    weekly:
      monday: ["09:00-17:00"]
steps:
  hours:
    type: business_hours
    schedule: office
    open: o
    closed: o
  o: {type: hangup}
"""


def errors(text: str) -> list[str]:
    _, findings = check_flow_text(text, name="t.yaml")
    return [finding.detail or finding.render() for finding in findings]


@pytest.mark.parametrize(
    ("old", "new", "message", "where"),
    [
        (
            "Europe/Prague",
            "Europe/Prag",
            "unknown time zone 'Europe/Prag'; did you mean 'Europe/Prague'?",
            "t.yaml:5:16 (field 'schedules.office')",
        ),
        (
            "Europe/Prague",
            "europe/prague",
            "did you mean 'Europe/Prague'?",
            "t.yaml:5:16",
        ),
        ("09:00-17:00", "25:00-17:00", "hour 25 is out of range", "t.yaml:7:17"),
        ("09:00-17:00", "9:00-17:00", "malformed interval '9:00-17:00'", "t.yaml:7:17"),
        ("09:00-17:00", "09:60-17:00", "minute 60 is out of range", "t.yaml:7:17"),
        ("09:00-17:00", "opening time", "malformed interval 'opening time'", "t.yaml:7:17"),
        ("09:00-17:00", "09:00-09:00", "is empty", "t.yaml:7:17"),
        ("09:00-17:00", "24:00-02:00", "starts at 24:00", "t.yaml:7:17"),
        ("09:00-17:00", "٠٩:٠٠-١٧:٠٠", "malformed interval", "t.yaml:7:17"),  # Arabic-Indic
        (
            '"09:00-17:00"]',
            '"09:00-17:00", "12:00-13:00"]',
            "interval 12:00-13:00 overlaps 09:00-17:00",
            "t.yaml:7:32",
        ),
        (
            '"09:00-17:00"]',
            '"22:00-02:00", "23:00-23:30"]',
            "interval 23:00-23:30 overlaps 22:00-02:00",
            "t.yaml:7:32",
        ),
        ("monday:", "munday:", "unknown weekday 'munday'; did you mean", "t.yaml:7:7"),
        ("monday:", "Monday:", "unknown weekday 'Monday'; did you mean 'monday'?", "t.yaml:7:7"),
        ("schedule: office", "schedule: ofice", "unknown schedule 'ofice'; did you mean", ""),
        (
            "    weekly:",
            "    timezone: UTC\n    weekly:",
            "unknown field 'timezone' for a schedule; did you mean 'time_zone'?",
            "t.yaml:6:5",
        ),
        ('["09:00-17:00"]', "09:00-17:00", "expected a list of intervals", "t.yaml:7:15"),
        ('["09:00-17:00"]', "[900]", "expected an interval HH:MM-HH:MM", "t.yaml:7:16"),
        ('["09:00-17:00"]', "[[[[[]]]]]", "found a list", "t.yaml:7:16"),
        ("Europe/Prague", "[Europe]", "time_zone is an IANA name", "t.yaml:5:16"),
        ("schedule: office", "schedule: 12", "expected a schedule name or a schedule", ""),
    ],
)
def test_load_errors_name_their_place(old: str, new: str, message: str, where: str) -> None:
    assert old in BASE
    found = errors(BASE.replace(old, new, 1))
    assert len(found) == 1, found
    assert message in found[0]
    assert where in found[0]
    assert "^" in found[0]  # the caret under the place


def with_exceptions(*items: str) -> str:
    return BASE.replace(
        '      monday: ["09:00-17:00"]\n',
        '      monday: ["09:00-17:00"]\n    exceptions:\n'
        + "".join(f"      - {item}\n" for item in items),
    )


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (("{date: 2026-12-24, closed: true}",) * 2, "date 2026-12-24 is given twice"),
        (("{date: 2026-02-30, closed: true}",), "2026-02-30 is not a date"),
        (("{date: 20261224, closed: true}",), "expected a date YYYY-MM-DD"),
        (("{date: 2026-12-24}",), "either closed: true or hours: [...], not neither"),
        (
            ('{date: 2026-12-24, closed: true, hours: ["09:00-10:00"]}',),
            "not both",
        ),
        (("{date: 2026-12-24, closed: false}",), "closed is true (closed all day)"),
        (("{date: 2026-12-24, hours: []}",), "expected a list of intervals"),
        (("{closed: true}",), "an exception needs a date"),
        (("{date: 2026-12-24, closed: true, nmae: x}",), "unknown field 'nmae' for an exception"),
        (("{date: 2026-12-24, closed: true, name: [x]}",), "name is text"),
        (("just text",), "an exception is key/value fields"),
    ],
)
def test_exception_errors(items: tuple[str, ...], message: str) -> None:
    found = errors(with_exceptions(*items))
    assert len(found) == 1, found
    assert message in found[0]
    assert "t.yaml:" in found[0] and "^" in found[0]


def test_an_inline_schedule_names_the_step_and_field() -> None:
    text = flow_text({"time_zone": "Mars/Olympus", "weekly": {}}, named=False)
    [found] = errors(text)
    assert "unknown time zone 'Mars/Olympus'" in found
    assert "(step 'hours', field 'schedule')" in found


def test_a_document_without_schedules_says_so() -> None:
    document = yaml.safe_load(flow_text({"time_zone": "UTC", "weekly": {}}))
    del document["schedules"]
    [found] = errors(json.dumps(document))
    assert "unknown schedule 'office'; the document has no schedules" in found


# --- hostile schedules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "Europe/../../../etc/passwd",
        "Europe/./Prague",
        ".hidden",
        "Europe//Prague",
        "Europe/Prague\x00",
        "Europe\\Prague",
        "x" * 10_000,
        "",
        "-rf",
    ],
)
def test_a_path_like_zone_is_a_load_error_and_never_reaches_zoneinfo(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    real = zoneinfo.ZoneInfo

    def spy(key: str) -> zoneinfo.ZoneInfo:
        asked.append(key)
        return real(key)

    monkeypatch.setattr(zoneinfo, "ZoneInfo", spy)
    [found] = errors(flow_text({"time_zone": name, "weekly": {}}))
    assert "unknown time zone" in found
    assert "Traceback" not in found
    assert asked == []


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (
            {"time_zone": "UTC", "weekly": {"monday": ["00:00-00:30"] * 49}},
            "at most 48 intervals a day are allowed, not 49",
        ),
        (
            {
                "time_zone": "UTC",
                "weekly": {},
                "exceptions": [{"date": "2026-01-01", "closed": True}] * 1001,
            },
            "at most 1000 exceptions are allowed, not 1001",
        ),
        (
            {"time_zone": "UTC", "weekly": {"monday": ["x" * 1_000_000]}},
            "malformed interval 'xxxxx",
        ),
        ({"time_zone": "UTC", "weekly": [1, 2]}, "weekly is a map of weekday"),
        ({"time_zone": "UTC", "weekly": {}, "exceptions": {"a": 1}}, "exceptions is a list"),
        ({"time_zone": "UTC", "weekly": {"1": ["09:00-10:00"]}}, "unknown weekday '1'"),
        ({"time_zone": "UTC", "weekly": {"monday": None}}, "found null"),
        ({"time_zone": "UTC", "weekly": {"monday": [True]}}, "found a boolean"),
        ({"time_zone": "UTC", "weekly": {"monday": [{"a": [[[[[]]]]]}]}}, "found a map"),
        ({"weekly": {}}, "a schedule needs time_zone"),
        ({"time_zone": "UTC"}, "a schedule needs weekly"),
    ],
    ids=[
        "49-intervals",
        "1001-exceptions",
        "huge-interval",
        "weekly-list",
        "exceptions-map",
        "numeric-weekday",
        "null-day",
        "boolean-interval",
        "deep-interval",
        "no-zone",
        "no-weekly",
    ],
)
def test_hostile_schedules_are_clean_load_errors(schedule: dict[str, Any], message: str) -> None:
    found = errors(flow_text(schedule))
    assert len(found) == 1, found[:3]
    assert message in found[0]
    assert len(found[0]) < 2000  # a huge value is shown cut


def test_too_many_schedules_is_one_error() -> None:
    document = yaml.safe_load(flow_text({"time_zone": "UTC", "weekly": {}}))
    document["schedules"] = {f"s{i}": {"time_zone": "UTC", "weekly": {}} for i in range(101)}
    document["steps"]["hours"]["schedule"] = "s1"
    found = errors(json.dumps(document))
    assert any("at most 100 schedules are allowed, not 101" in f for f in found)


def test_schedules_that_are_not_a_map() -> None:
    text = BASE.replace("schedules:\n  office:", "schedules: [1]\nunused:\n  office:")
    found = errors(text)
    assert any("schedules is a map of schedule name to schedule, found a list" in f for f in found)


def test_a_deeply_nested_schedule_is_a_load_error() -> None:
    deep = "[" * 5000 + "]" * 5000
    text = BASE.replace('["09:00-17:00"]', deep)
    status, _ = cli("check", "-", stdin=text)
    assert status == 1


# --- tzdata --------------------------------------------------------------------------------------


def test_zones_load_from_tzdata_without_a_system_zone_database() -> None:
    result = run_python(
        """
        import zoneinfo
        zoneinfo.reset_tzpath([])
        assert zoneinfo.TZPATH == ()
        from datetime import datetime, timezone
        from flowlang import load_flow_text
        flow = load_flow_text('''
        flow: t
        start: hours
        steps:
          hours:
            type: business_hours
            schedule: {time_zone: Europe/Prague, weekly: {sunday: ["02:00-03:00"]}}
            open: o
            closed: o
          o: {type: hangup}
        ''')
        schedule = flow.steps["hours"].fields["schedule"]
        moment = datetime(2026, 10, 25, 1, 30, tzinfo=timezone.utc)
        print(schedule.decide(moment)[1]["local_time"])
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2026-10-25T02:30:00+01:00"


# --- flowlang run --now ------------------------------------------------------------------------


def test_run_now_decides_by_the_given_time(tmp_path: Any) -> None:
    path = tmp_path / "hours.yaml"
    path.write_text(
        flow_text({"time_zone": "Europe/Prague", "weekly": {"friday": ["09:00-17:00"]}})
    )
    status, out = cli("run", str(path), "--now", "2026-12-18T10:00:00+01:00")
    assert status == 0
    assert "hours          business_hours      open" in out
    assert "why: friday 2026-12-18 10:00:00 CET in Europe/Prague: friday 09:00-17:00" in out
    status, out = cli("run", str(path), "--now", "2026-12-18T17:00:00+01:00", "--json")
    first = json.loads(out.splitlines()[0])
    assert (first["outcome"], first["detail"]["local_time"]) == (
        "closed",
        "2026-12-18T17:00:00+01:00",
    )


@pytest.mark.parametrize(
    ("now", "message"),
    [
        ("2026-12-18T10:00:00", "has no UTC offset"),
        ("tomorrow", "is not a time"),
        ("2026-02-30T10:00:00+01:00", "is not a time"),
        ("", "is not a time"),
        ("9" * 10_000, "is not a time"),
        ("0001-01-01T00:00:00+01:00", "is out of range"),
    ],
)
def test_run_now_refuses_a_naive_or_malformed_time_with_status_2(
    now: str, message: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hours.yaml"
    path.write_text(flow_text({"time_zone": "UTC", "weekly": {}}))
    status, out = cli("run", str(path), "--now", now)
    err = capsys.readouterr().err
    assert (status, out) == (2, "")
    assert message in err and "--now" in err and "Traceback" not in err
    assert len(err) < 500


def test_the_schedules_section_is_checked_when_only_inline_schedules_are_used() -> None:
    document = json.loads(flow_text({"time_zone": "UTC", "weekly": {}}, named=False))
    document["schedules"] = {"spare": {"time_zone": "UTC", "weekly": {"monday": ["9-17"]}}}
    [found] = errors(json.dumps(document))
    assert "malformed interval '9-17'" in found and "field 'schedules.spare'" in found


def test_checking_documents_keeps_no_reader_alive() -> None:
    from flowlang.kinds import business_hours

    text = flow_text({"time_zone": "UTC", "weekly": {}})
    for _ in range(20):
        check_flow_text(text, name="t.yaml")
    gc.collect()
    assert len(business_hours._READERS) == 0


def test_schedules_no_step_reads_are_checked_all_the_same() -> None:
    text = (
        "flow: t\nstart: o\nschedules:\n"
        "  unused: {time_zone: UTC, wekly: {}}\n"
        "steps:\n  o: {type: hangup}\n"
    )
    flow, findings = check_flow_text(text, name="unused.yaml")
    assert flow is None
    rendered = [finding.render() for finding in findings]
    assert any(
        "unknown field 'wekly' for a schedule; did you mean 'weekly'?" in r for r in rendered
    )
    assert any("unused.yaml:4:" in r for r in rendered)


@pytest.mark.parametrize(
    "zone", ["localtime", "posixrules", "Factory", "posix/Europe/Prague", "right/Europe/Prague"]
)
def test_zones_whose_meaning_depends_on_the_host_are_refused(zone: str) -> None:
    """A document means the same hours on every machine: no host zone, no copy trees."""
    flow, findings = check_flow_text(flow_text({"time_zone": zone, "weekly": {}}))
    assert flow is None
    assert any(f"unknown time zone {zone!r}" in finding.message for finding in findings)


def test_did_you_mean_hints_have_a_budget_per_document() -> None:
    """Each zone hint compares a name with hundreds: a document with thousands of unknown zones
    gets hints on the first ones only (checking stays linear in the document)."""
    steps = "".join(
        f"  s{index}: {{type: business_hours, schedule: {{time_zone: Europe/Pragu{index}, "
        f"weekly: {{}}}}, open: s{index + 1}, closed: s{index + 1}}}\n"
        for index in range(300)
    )
    text = f"flow: t\nstart: s0\nsteps:\n{steps}  s300: {{type: hangup}}\n"
    flow, findings = check_flow_text(text)
    assert flow is None
    zones = [finding for finding in findings if "unknown time zone" in finding.message]
    assert len(zones) == 300
    hinted = [finding for finding in zones if "did you mean" in finding.message]
    assert 0 < len(hinted) <= 100

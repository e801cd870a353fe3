//! Time-of-day windows in an IANA time zone, for the `time` condition of a rule.
//!
//! A window is read once, when it is deserialised or built with [`TimeWindow::new`]: the clock
//! times become minutes since midnight, the days a bit set, and the zone a [`TimeZone`] from the
//! tz database compiled into the binary. Matching then converts the request's instant to the
//! zone's wall-clock time once and compares integers. A window that did not parse keeps its
//! error for [`super::validate`] to report and never matches.
//!
//! Semantics, on the wall clock of the zone:
//! - `from` is inclusive, `to` exclusive, at minute resolution (`to: "06:00"` ends at 05:59:59).
//! - `from > to` wraps midnight (`22:00`–`06:00`); `to: "00:00"` runs to midnight.
//! - `days` are the days a window *opens*: with `22:00`–`06:00` on `[fri]`, Saturday 02:00 is
//!   still Friday night and matches, Monday 02:00 (Sunday night) does not.
//! - Daylight saving: a window is wall-clock time, so on the spring-forward day in
//!   Europe/Berlin the skipped hour (02:00–03:00) never happens and a window inside it does not
//!   match that day, while a window that spans it is an hour shorter; on the fall-back day the
//!   repeated hour matches twice.

use jiff::Timestamp;
use jiff::civil::Weekday;
use jiff::tz::{TimeZone, TimeZoneDatabase};
use serde::{Deserialize, Serialize};

/// A day of the week as written in a rule (`mon` … `sun`; full names are accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Day {
    #[serde(alias = "monday")]
    Mon,
    #[serde(alias = "tuesday")]
    Tue,
    #[serde(alias = "wednesday")]
    Wed,
    #[serde(alias = "thursday")]
    Thu,
    #[serde(alias = "friday")]
    Fri,
    #[serde(alias = "saturday")]
    Sat,
    #[serde(alias = "sunday")]
    Sun,
}

impl Day {
    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

fn weekday_bit(w: Weekday) -> u8 {
    // Monday is 0, as in `Day`.
    1 << w.to_monday_zero_offset()
}

/// The window as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindowSpec {
    /// Start, `HH:MM` (inclusive).
    pub from: String,
    /// End, `HH:MM` (exclusive); before `from` when the window wraps midnight.
    pub to: String,
    /// IANA time zone name, e.g. `Europe/Berlin` or `UTC`.
    pub tz: String,
    /// Days on which the window opens; absent means every day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<Day>>,
}

/// A [`TimeWindowSpec`] together with what was read from it once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "TimeWindowSpec", into = "TimeWindowSpec")]
pub struct TimeWindow {
    spec: TimeWindowSpec,
    parsed: Result<Parsed, WindowError>,
}

#[derive(Debug, Clone)]
struct Parsed {
    /// Minutes since midnight.
    from: u16,
    to: u16,
    tz: TimeZone,
    /// Bit `n` set: the window opens on day `n` (Monday = 0).
    days: u8,
}

/// Why a window did not parse: the field and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WindowError {
    pub field: &'static str,
    pub message: String,
}

impl PartialEq for TimeWindow {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

impl From<TimeWindowSpec> for TimeWindow {
    fn from(spec: TimeWindowSpec) -> Self {
        TimeWindow::new(spec)
    }
}

impl From<TimeWindow> for TimeWindowSpec {
    fn from(w: TimeWindow) -> Self {
        w.spec
    }
}

impl TimeWindow {
    /// Reads the spec once. A spec that does not parse is kept: [`super::validate`] reports it,
    /// and the window never matches.
    pub fn new(spec: TimeWindowSpec) -> Self {
        let parsed = parse(&spec);
        TimeWindow { spec, parsed }
    }

    pub fn spec(&self) -> &TimeWindowSpec {
        &self.spec
    }

    /// The parsed zone, if the spec named a known one.
    pub fn time_zone(&self) -> Option<&TimeZone> {
        self.parsed.as_ref().ok().map(|p| &p.tz)
    }

    pub(super) fn error(&self) -> Option<&WindowError> {
        self.parsed.as_ref().err()
    }

    /// Whether `now` falls in the window, on the zone's wall clock.
    pub fn contains(&self, now: Timestamp) -> bool {
        let Ok(p) = &self.parsed else {
            return false;
        };
        let local = p.tz.to_datetime(now);
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        let opened_on = if p.from < p.to {
            if minute < p.from || minute >= p.to {
                return false;
            }
            local.weekday()
        } else if minute >= p.from {
            local.weekday()
        } else if minute < p.to {
            // After midnight: the window opened the day before.
            local.weekday().previous()
        } else {
            return false;
        };
        p.days & weekday_bit(opened_on) != 0
    }
}

fn parse(spec: &TimeWindowSpec) -> Result<Parsed, WindowError> {
    let err = |field, message: String| WindowError { field, message };
    let from = clock(&spec.from).ok_or_else(|| err("from", bad_clock(&spec.from)))?;
    let to = clock(&spec.to).ok_or_else(|| err("to", bad_clock(&spec.to)))?;
    if from == to {
        return Err(err(
            "to",
            format!("equals `from` ({}): the window would be empty", spec.from),
        ));
    }
    let tz = TimeZoneDatabase::bundled()
        .get(&spec.tz)
        .map_err(|_| err("tz", format!("unknown time zone {:?}", spec.tz)))?;
    let days = match &spec.days {
        None => 0x7f,
        Some(days) if days.is_empty() => {
            return Err(err(
                "days",
                "must not be empty (leave it out for every day)".into(),
            ));
        }
        Some(days) => days.iter().fold(0, |acc, d| acc | d.bit()),
    };
    Ok(Parsed { from, to, tz, days })
}

fn bad_clock(s: &str) -> String {
    format!("invalid time {s:?}: expected HH:MM from 00:00 to 23:59")
}

/// `HH:MM` (two digits each) as minutes since midnight.
fn clock(s: &str) -> Option<u16> {
    let b = s.as_bytes();
    if b.len() != 5 || b[2] != b':' {
        return None;
    }
    let two = |i: usize| -> Option<u16> {
        let (h, l) = (b[i], b[i + 1]);
        (h.is_ascii_digit() && l.is_ascii_digit()).then(|| u16::from((h - b'0') * 10 + (l - b'0')))
    };
    let (h, m) = (two(0)?, two(3)?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

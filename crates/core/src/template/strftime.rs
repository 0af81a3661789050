//! `strftime_now(format)`, the global transformers gives chat templates (Llama 3.x prints
//! today's date with it): the current local time formatted like C `strftime`.
//!
//! Without a date-time crate, local time is UTC shifted by the UTC offset read from the
//! system's TZif zone file (`$TZ` naming a zone, else `/etc/localtime`). The offset is the one in
//! force at the last transition the file lists at or before now, which is exact for every zone
//! whose file carries its transitions (tzdata's default "fat" files do, through 2037); a POSIX
//! rule string in `$TZ` (such as `EST5EDT`) or an unreadable file means UTC.

use std::time::{SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

pub(super) fn strftime_now(format: &str) -> String {
    let now = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(before_epoch) => -(before_epoch.duration().as_secs() as i64),
    };
    format_local(format, now + local_utc_offset(now))
}

/// Formats `local_secs` (seconds since 1970-01-01 00:00 local time) with the common `strftime`
/// conversions: `%Y %y %m %d %e %j %H %I %M %S %p %a %A %b %h %B %%`, plus glibc's `-` flag
/// (`%-d`: no padding). Any other conversion is copied through unchanged, as glibc does.
pub(super) fn format_local(format: &str, local_secs: i64) -> String {
    let days = local_secs.div_euclid(86_400);
    let secs_of_day = local_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
    let weekday = (days + 4).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = chars.next();
        let unpadded = spec == Some('-');
        if unpadded {
            spec = chars.next();
        }
        let num = |value: i64, width: usize, pad: char| {
            let digits = value.to_string();
            if unpadded || digits.len() >= width {
                digits
            } else {
                format!("{}{digits}", pad.to_string().repeat(width - digits.len()))
            }
        };
        match spec {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&num(year.rem_euclid(100), 2, '0')),
            Some('m') => out.push_str(&num(month as i64, 2, '0')),
            Some('d') => out.push_str(&num(day as i64, 2, '0')),
            Some('e') => out.push_str(&num(day as i64, 2, ' ')),
            Some('j') => out.push_str(&num(day_of_year, 3, '0')),
            Some('H') => out.push_str(&num(hour, 2, '0')),
            Some('I') => out.push_str(&num(hour12, 2, '0')),
            Some('M') => out.push_str(&num(minute, 2, '0')),
            Some('S') => out.push_str(&num(second, 2, '0')),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('a') => out.push_str(&WEEKDAYS[weekday][..3]),
            Some('A') => out.push_str(WEEKDAYS[weekday]),
            Some('b' | 'h') => out.push_str(&MONTHS[month as usize - 1][..3]),
            Some('B') => out.push_str(MONTHS[month as usize - 1]),
            Some('%') => out.push('%'),
            other => {
                out.push('%');
                if unpadded {
                    out.push('-');
                }
                out.extend(other);
            }
        }
    }
    out
}

/// Proleptic Gregorian (year, month 1-12, day 1-31) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn local_utc_offset(now: i64) -> i64 {
    let path = match std::env::var("TZ") {
        Ok(tz) if tz.is_empty() => return 0, // POSIX: an empty TZ is UTC
        Ok(tz) => {
            let tz = tz.trim_start_matches(':');
            if tz.starts_with('/') {
                tz.to_owned()
            } else {
                format!("/usr/share/zoneinfo/{tz}")
            }
        }
        Err(_) => "/etc/localtime".to_owned(),
    };
    std::fs::read(path)
        .ok()
        .and_then(|data| tzif_offset(&data, now))
        .unwrap_or(0)
}

/// UTC offset in seconds at `now` from a TZif file (RFC 8536), using the 64-bit data block of
/// version 2+ files. `None` if the data is malformed.
pub(super) fn tzif_offset(data: &[u8], now: i64) -> Option<i64> {
    let (mut header, mut time_size) = (parse_tzif_header(data)?, 4);
    if data[4] >= b'2' {
        let v2_start = 44 + header.block_len(4);
        header = parse_tzif_header(data.get(v2_start..)?)?;
        header.start += v2_start;
        time_size = 8;
    }
    let times = data.get(header.start..header.start + header.time_count * time_size)?;
    let indices_start = header.start + header.time_count * time_size;
    let indices = data.get(indices_start..indices_start + header.time_count)?;
    let types = data.get(indices_start + header.time_count..)?;

    let transition_time = |i: usize| -> Option<i64> {
        let bytes = times.get(i * time_size..(i + 1) * time_size)?;
        Some(if time_size == 8 {
            i64::from_be_bytes(bytes.try_into().ok()?)
        } else {
            i64::from(i32::from_be_bytes(bytes.try_into().ok()?))
        })
    };
    let mut local_type = 0; // RFC 8536: type 0 applies before the first transition
    for (i, &type_index) in indices.iter().enumerate() {
        if transition_time(i)? > now {
            break;
        }
        local_type = usize::from(type_index);
    }
    if local_type >= header.type_count {
        return None;
    }
    let utoff = types.get(local_type * 6..local_type * 6 + 4)?;
    Some(i64::from(i32::from_be_bytes(utoff.try_into().ok()?)))
}

struct TzifHeader {
    /// Offset of the transition times, just past the 44-byte header.
    start: usize,
    counts: [usize; 6],
    time_count: usize,
    type_count: usize,
}

impl TzifHeader {
    /// Length of the data block that follows this header, for transition times of `time_size`.
    fn block_len(&self, time_size: usize) -> usize {
        let [isut, isstd, leap, time, typ, chars] = self.counts;
        time * time_size + time + typ * 6 + chars + leap * (time_size + 4) + isstd + isut
    }
}

fn parse_tzif_header(data: &[u8]) -> Option<TzifHeader> {
    if data.get(..4)? != b"TZif" {
        return None;
    }
    let mut counts = [0usize; 6];
    for (i, count) in counts.iter_mut().enumerate() {
        let bytes = data.get(20 + 4 * i..24 + 4 * i)?;
        *count = u32::from_be_bytes(bytes.try_into().ok()?) as usize;
    }
    Some(TzifHeader {
        start: 44,
        counts,
        time_count: counts[3],
        type_count: counts[4],
    })
}

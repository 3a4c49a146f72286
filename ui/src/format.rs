//! How durations, sizes and times read in the UI.

/// `850ms`, `12.3s`, `4m 05s`, `2h 07m`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    if ms < 60_000 {
        return format!("{:.1}s", ms as f64 / 1_000.0);
    }
    let seconds = ms / 1_000;
    if seconds < 3_600 {
        return format!("{}m {:02}s", seconds / 60, seconds % 60);
    }
    format!("{}h {:02}m", seconds / 3_600, (seconds % 3_600) / 60)
}

/// Formats a step's duration without its time paused in the debugger, followed by
/// that time when there was some: `1.2s (+2m 00s paused)`. Empty until the
/// step finished.
pub fn step_duration(duration_ms: Option<i64>, paused_ms: i64) -> String {
    match (duration_ms, paused_ms) {
        (None, _) => String::new(),
        (Some(ran), 0) => duration(ran),
        (Some(ran), paused) => format!("{} (+{} paused)", duration(ran), duration(paused)),
    }
}

/// A job id as the CLI shows it: the first eighteen characters, which
/// tell apart even jobs started in the same millisecond (the first eight
/// of a UUIDv7 change only every 65 seconds).
pub fn short_id(id: &str) -> &str {
    id.get(..18).unwrap_or(id)
}

/// `512 B`, `1.5 KiB`, `3.0 MiB`.
pub fn size(bytes: i64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1_024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1_024.0;
    let mut unit = 0;
    while value >= 1_024.0 && unit + 1 < UNITS.len() {
        value /= 1_024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// How long ago `then_ms` was at `now_ms`: `just now`, `5m ago`, `3h ago`,
/// `2d ago`.
pub fn ago(then_ms: i64, now_ms: i64) -> String {
    let seconds = (now_ms - then_ms).max(0) / 1_000;
    match seconds {
        0..=9 => "just now".to_owned(),
        10..=59 => format!("{seconds}s ago"),
        60..=3_599 => format!("{}m ago", seconds / 60),
        3_600..=86_399 => format!("{}h ago", seconds / 3_600),
        _ => format!("{}d ago", seconds / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_duration_shows_paused_time_apart() {
        assert_eq!(step_duration(None, 500), "");
        assert_eq!(step_duration(Some(850), 0), "850ms");
        assert_eq!(step_duration(Some(850), 125_000), "850ms (+2m 05s paused)");
    }

    #[test]
    fn durations_pick_a_readable_unit() {
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(12_340), "12.3s");
        assert_eq!(duration(245_000), "4m 05s");
        assert_eq!(duration(7_620_000), "2h 07m");
        assert_eq!(duration(-5), "0ms");
    }

    #[test]
    fn short_ids_match_the_cli() {
        assert_eq!(
            short_id("01a24355-a819-779f-8ca7-cd7543a5bcd3"),
            "01a24355-a819-779f"
        );
        assert_eq!(short_id("abc"), "abc");
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1_536), "1.5 KiB");
        assert_eq!(size(3 * 1_024 * 1_024), "3.0 MiB");
    }

    #[test]
    fn ago_rounds_down() {
        assert_eq!(ago(0, 5_000), "just now");
        assert_eq!(ago(0, 125_000), "2m ago");
        assert_eq!(ago(0, 3 * 86_400_000 + 5), "3d ago");
    }
}

//! Pure: the placeholders of key prefixes, piece names and manifest names (`{date}`, `{time}`,
//! `{timestamp}`, `{schedule}`, `{delivery}`, `{mode}`, `{run}`; in piece names also `{stem}`,
//! `{n}`, `{ext}`, which the uploader fills per file), expanded once, when a delivery starts.

use jiff::Timestamp;

/// Placeholders the operator expands.
pub const RUN_PLACEHOLDERS: [&str; 7] = [
    "{date}",
    "{time}",
    "{timestamp}",
    "{schedule}",
    "{delivery}",
    "{mode}",
    "{run}",
];

/// Placeholders the uploader expands, per file, in piece names.
pub const PIECE_PLACEHOLDERS: [&str; 3] = ["{stem}", "{n}", "{ext}"];

/// The CEL rule that refuses an unknown placeholder (`pieces`: the piece placeholders count).
pub fn known_placeholders_rule(pieces: bool) -> String {
    let mut known: Vec<&str> = RUN_PLACEHOLDERS.to_vec();
    if pieces {
        known.extend(PIECE_PLACEHOLDERS);
    }
    let list = known
        .iter()
        .map(|p| format!("'{p}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("self.findAll('[{{][^{{}}]*[}}]').all(p, p in [{list}])")
}

/// The message of that rule for a prefix or a manifest name.
pub const RUN_PLACEHOLDERS_MESSAGE: &str =
    "unknown placeholder: use {date}, {time}, {timestamp}, {schedule}, {delivery}, {mode}, {run}";
/// The message of that rule for piece names.
pub const PIECE_PLACEHOLDERS_MESSAGE: &str = "unknown placeholder: use {date}, {time}, {timestamp}, {schedule}, {delivery}, {mode}, {run}, {stem}, {n}, {ext}";

/// What a run's placeholders stand for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunValues {
    /// The run's time (a schedule's slot, else when the delivery started), in UTC.
    pub at: Timestamp,
    pub schedule: String,
    pub delivery: String,
    /// `full` or `iter` (incremental), as Audience Manager names them.
    pub mode: String,
    pub run: u64,
}

/// `text` with every run placeholder replaced (piece placeholders left for the uploader).
pub fn expand(text: &str, v: &RunValues) -> String {
    let utc = v.at.to_zoned(jiff::tz::TimeZone::UTC);
    text.replace("{date}", &utc.strftime("%Y-%m-%d").to_string())
        .replace("{time}", &utc.strftime("%H%M%S").to_string())
        .replace("{timestamp}", &v.at.as_second().to_string())
        .replace("{schedule}", &v.schedule)
        .replace("{delivery}", &v.delivery)
        .replace("{mode}", &v.mode)
        .replace("{run}", &v.run.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_placeholders_expand_and_piece_ones_stay() {
        let v = RunValues {
            at: "2026-12-07T06:00:05Z".parse().unwrap(),
            schedule: "acme-daily".into(),
            delivery: "acme-daily-1796623205".into(),
            mode: "iter".into(),
            run: 12,
        };
        assert_eq!(
            expand("{date}/{schedule}-{run}/", &v),
            "2026-12-07/acme-daily-12/"
        );
        assert_eq!(
            expand("{stem}_{mode}_{timestamp}-{n}{ext}", &v),
            "{stem}_iter_1796623205-{n}{ext}"
        );
        assert_eq!(
            expand("{time} {delivery}", &v),
            "060005 acme-daily-1796623205"
        );
    }

    #[test]
    fn the_rule_lists_what_each_field_knows() {
        assert!(known_placeholders_rule(true).contains("'{ext}'"));
        assert!(!known_placeholders_rule(false).contains("'{ext}'"));
        for p in RUN_PLACEHOLDERS {
            assert!(RUN_PLACEHOLDERS_MESSAGE.contains(p));
            assert!(PIECE_PLACEHOLDERS_MESSAGE.contains(p));
        }
        for p in PIECE_PLACEHOLDERS {
            assert!(PIECE_PLACEHOLDERS_MESSAGE.contains(p));
        }
    }
}

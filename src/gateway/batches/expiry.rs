//! How long a file is kept: OpenAI's expiration policy, `expires_after` of an upload and
//! `output_expires_after` of a batch (for its output and error files), checked into seconds
//! from the file's creation. Pure values, unit-tested.

use serde::Deserialize;

use crate::gateway::errors::ApiError;

/// The shortest time a caller may keep a file, as at OpenAI: an hour.
pub const MIN_S: u64 = 3600;
/// The longest: 30 days.
pub const MAX_S: u64 = 30 * 24 * 3600;

/// `{"anchor": "created_at", "seconds": N}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpiresAfter {
    /// What the time counts from: only `created_at` (the file's creation).
    pub anchor: String,
    /// How long after it the file goes.
    pub seconds: u64,
}

impl ExpiresAfter {
    /// Seconds from the file's creation; `param` names the policy in an error.
    pub fn keep_s(&self, param: &str) -> Result<u64, ApiError> {
        if self.anchor != "created_at" {
            return Err(ApiError::invalid(
                format!("`{param}.anchor` must be \"created_at\""),
                Some(format!("{param}.anchor")),
            ));
        }
        if !(MIN_S..=MAX_S).contains(&self.seconds) {
            return Err(ApiError::invalid(
                format!("`{param}.seconds` must be from {MIN_S} (an hour) to {MAX_S} (30 days)"),
                Some(format!("{param}.seconds")),
            ));
        }
        Ok(self.seconds)
    }
}

/// The policy an upload form gives as `expires_after[anchor]` and `expires_after[seconds]`
/// (as OpenAI's SDKs send it): `None` when the form has neither.
pub fn from_form(
    anchor: Option<String>,
    seconds: Option<String>,
) -> Result<Option<ExpiresAfter>, ApiError> {
    match (anchor, seconds) {
        (None, None) => Ok(None),
        (Some(anchor), Some(seconds)) => {
            let seconds = seconds.trim().parse().map_err(|_| {
                ApiError::invalid(
                    format!(
                        "`expires_after[seconds]` must be a whole number from {MIN_S} to {MAX_S}"
                    ),
                    Some("expires_after[seconds]".into()),
                )
            })?;
            Ok(Some(ExpiresAfter { anchor, seconds }))
        }
        (None, Some(_)) => Err(missing("anchor")),
        (Some(_), None) => Err(missing("seconds")),
    }
}

fn missing(part: &str) -> ApiError {
    ApiError::invalid(
        format!("`expires_after[{part}]` is required with the other half of `expires_after`"),
        Some(format!("expires_after[{part}]")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(anchor: &str, seconds: u64) -> ExpiresAfter {
        ExpiresAfter {
            anchor: anchor.into(),
            seconds,
        }
    }

    #[test]
    fn a_policy_keeps_a_file_an_hour_to_thirty_days_from_its_creation() {
        assert_eq!(
            policy("created_at", 3600).keep_s("expires_after").ok(),
            Some(3600)
        );
        assert_eq!(policy("created_at", MAX_S).keep_s("x").ok(), Some(MAX_S));
        for seconds in [0, 3599, MAX_S + 1] {
            let error = policy("created_at", seconds).keep_s("output_expires_after");
            let error = error.err().map(|e| e.param);
            assert_eq!(error, Some(Some("output_expires_after.seconds".into())));
        }
        let error = policy("last_active_at", 3600).keep_s("expires_after").err();
        assert_eq!(
            error.map(|e| e.param),
            Some(Some("expires_after.anchor".into()))
        );
    }

    #[test]
    fn a_form_gives_both_halves_or_neither() {
        assert_eq!(from_form(None, None).ok(), Some(None));
        let both = from_form(Some("created_at".into()), Some("7200".into())).ok();
        assert_eq!(both, Some(Some(policy("created_at", 7200))));
        let param = |e: Result<_, ApiError>| e.err().and_then(|e| e.param);
        let half = from_form(Some("created_at".into()), None);
        assert_eq!(param(half), Some("expires_after[seconds]".into()));
        let half = from_form(None, Some("7200".into()));
        assert_eq!(param(half), Some("expires_after[anchor]".into()));
        let text = from_form(Some("created_at".into()), Some("an hour".into()));
        assert_eq!(param(text), Some("expires_after[seconds]".into()));
    }
}

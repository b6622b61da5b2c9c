//! OpenAI's `service_tier` as warren's priority tiers ([`Tier`]): `flex` (OpenAI's slower
//! tier for work nobody waits on) is the batch tier; `auto`, `default`, `priority` and `scale`
//! are the interactive tier, the highest warren has. Any other value is refused by name.
//! The Batch API's requests are batch work whatever their lines say. Pure.

use crate::gateway::errors::ApiError;
use crate::protocol::Tier;

/// The values OpenAI defines.
const VALUES: [&str; 5] = ["auto", "default", "flex", "priority", "scale"];

/// The tier a request's `service_tier` asks for (absent: interactive).
pub fn tier_of(service_tier: Option<&str>) -> Result<Tier, ApiError> {
    match service_tier {
        None => Ok(Tier::Interactive),
        Some("flex") => Ok(Tier::Batch),
        Some(value) if VALUES.contains(&value) => Ok(Tier::Interactive),
        Some(value) => Err(ApiError::invalid(
            format!(
                "`service_tier` is `{value}`; it must be one of {}",
                VALUES.join(", ")
            ),
            Some("service_tier".into()),
        )),
    }
}

/// The `service_tier` a response object reports for `tier`.
pub fn name_of(tier: Tier) -> &'static str {
    match tier {
        Tier::Interactive => "default",
        Tier::Batch => "flex",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flex_is_the_batch_tier_and_every_other_openai_tier_is_interactive() {
        assert_eq!(tier_of(None).unwrap(), Tier::Interactive);
        assert_eq!(tier_of(Some("flex")).unwrap(), Tier::Batch);
        for value in ["auto", "default", "priority", "scale"] {
            assert_eq!(tier_of(Some(value)).unwrap(), Tier::Interactive);
        }
        assert_eq!(name_of(tier_of(Some("flex")).unwrap()), "flex");
    }

    #[test]
    fn an_unknown_tier_is_refused_by_name() {
        let error = tier_of(Some("turbo")).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("service_tier"));
        assert!(error.message.contains("turbo"), "{}", error.message);
    }
}

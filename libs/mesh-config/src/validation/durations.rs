//! Durations: Istio's webhook and CRD rules want at least 1ms and whole
//! milliseconds (Envoy's timers are millisecond-grained).

use std::time::Duration as Std;

use crate::common::Duration;

pub fn at_least_1ms(d: &Duration) -> Result<(), String> {
    let value = d.to_std().map_err(|e| e.to_string())?;
    if value < Std::from_millis(1) {
        return Err(format!("duration {:?} must be at least 1ms", d.0));
    }
    if value.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!(
            "duration {:?} is finer than a millisecond; only whole milliseconds are supported",
            d.0
        ));
    }
    Ok(())
}

/// Whole seconds only (CORS `maxAge`).
pub fn whole_seconds(d: &Duration) -> Result<(), String> {
    at_least_1ms(d)?;
    match d.to_std() {
        Ok(value) if value.subsec_nanos() != 0 => {
            Err(format!("duration {:?} must be whole seconds", d.0))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_millisecond_or_more_in_whole_milliseconds() {
        assert!(at_least_1ms(&"1ms".into()).is_ok());
        assert!(at_least_1ms(&"1.5s".into()).is_ok());
        assert!(at_least_1ms(&"0s".into()).is_err());
        assert!(at_least_1ms(&"500us".into()).is_err());
        assert!(at_least_1ms(&"1500us".into()).is_err());
        assert!(at_least_1ms(&"soon".into()).is_err());
        assert!(whole_seconds(&"24h".into()).is_ok());
        assert!(whole_seconds(&"1.5s".into()).is_err());
    }
}

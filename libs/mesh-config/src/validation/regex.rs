//! Regular expressions as Envoy runs them: RE2 syntax, which has no
//! backreferences and no lookaround. `regex-syntax` implements the same
//! family (it refuses both), so parsing with it is a close stand-in for RE2.

/// Istio refuses longer patterns to bound Envoy's compiled program size.
const MAX_LEN: usize = 1024;

pub fn re2(pattern: &str) -> Result<(), String> {
    if pattern.len() > MAX_LEN {
        return Err(format!(
            "regex is {} characters long; at most {MAX_LEN} are allowed",
            pattern.len()
        ));
    }
    regex_syntax::Parser::new()
        .parse(pattern)
        .map(|_| ())
        .map_err(|error| {
            let reason = match &error {
                regex_syntax::Error::Parse(e) => e.kind().to_string(),
                regex_syntax::Error::Translate(e) => e.kind().to_string(),
                other => other.to_string(),
            };
            format!("invalid RE2 regex {pattern:?}: {reason}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_re2_and_refuses_what_re2_refuses() {
        assert!(re2("^/api/v[0-9]+/.*$").is_ok());
        assert!(re2(r"\d+\.\pL").is_ok());
        assert!(re2("(a)\\1").is_err(), "backreference");
        assert!(re2("foo(?=bar)").is_err(), "lookahead");
        assert!(re2("(?<!x)y").is_err(), "lookbehind");
        assert!(re2("[a-").is_err());
        assert!(re2(&"a".repeat(1025)).is_err());
    }
}

//! RequestAuthentication: each JWT rule names an issuer or a JWKS URI, and
//! where tokens are read from.

use super::{Checker, Path, durations, selectors};
use crate::security::RequestAuthentication;
use crate::security::request_authentication::JwtRule;

pub fn validate(v: &mut Checker, at: &Path, ra: &RequestAuthentication) {
    selectors::one_attachment(
        v,
        at,
        ra.selector.as_ref(),
        ra.target_ref.as_ref(),
        &ra.target_refs,
    );
    for (i, rule) in ra.jwt_rules.iter().enumerate() {
        jwt_rule(v, &at.field("jwtRules").index(i), rule);
    }
}

/// `http://` or `https://` with a host.
pub fn jwks_uri(uri: &str) -> Result<(), String> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))
        .ok_or_else(|| format!("{uri:?} must be an http:// or https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            if !port.is_empty() && port.parse::<u16>().is_err() && !authority.starts_with('[') {
                return Err(format!("{uri:?} has an invalid port"));
            }
            host
        }
        _ => authority,
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("{uri:?} has no host"));
    }
    Ok(())
}

fn jwt_rule(v: &mut Checker, at: &Path, r: &JwtRule) {
    for (i, audience) in r.audiences.iter().enumerate() {
        v.require(
            &at.field("audiences").index(i),
            !audience.is_empty(),
            "audiences cannot be empty strings",
        );
    }
    if r.issuer.is_empty() && r.jwks_uri.is_empty() {
        v.error(
            &at.field("issuer"),
            "a JWT rule needs an issuer or a jwksUri",
        );
    }
    if !r.jwks_uri.is_empty() {
        v.check(&at.field("jwksUri"), jwks_uri(&r.jwks_uri));
        if !r.jwks.is_empty() {
            v.error(&at.field("jwks"), "only one of jwks and jwksUri may be set");
        }
    }
    if !r.jwks.is_empty() {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(&r.jwks);
        let has_keys = parsed
            .as_ref()
            .is_ok_and(|j| j.get("keys").is_some_and(serde_json::Value::is_array));
        v.require(
            &at.field("jwks"),
            has_keys,
            "jwks must be a JSON Web Key Set: an object with a \"keys\" array",
        );
    }
    for (i, header) in r.from_headers.iter().enumerate() {
        v.require(
            &at.field("fromHeaders").index(i).field("name"),
            !header.name.is_empty(),
            "the header name is required",
        );
    }
    for (i, param) in r.from_params.iter().enumerate() {
        v.require(
            &at.field("fromParams").index(i),
            !param.is_empty(),
            "query parameter names cannot be empty",
        );
    }
    for (i, cookie) in r.from_cookies.iter().enumerate() {
        v.require(
            &at.field("fromCookies").index(i),
            !cookie.is_empty(),
            "cookie names cannot be empty",
        );
    }
    for (i, claim) in r.output_claim_to_headers.iter().enumerate() {
        let at = at.field("outputClaimToHeaders").index(i);
        v.require(
            &at.field("claim"),
            !claim.claim.is_empty(),
            "the claim is required",
        );
        let strict_name = !claim.header.is_empty()
            && claim
                .header
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        v.require(
            &at.field("header"),
            strict_name,
            format!(
                "{:?} is not a header name (letters, digits, '-' and '_')",
                claim.header
            ),
        );
    }
    for (i, claim) in r.space_delimited_claims.iter().enumerate() {
        v.require(
            &at.field("spaceDelimitedClaims").index(i),
            !claim.is_empty(),
            "claim names cannot be empty",
        );
    }
    if let Some(timeout) = &r.timeout {
        v.check(&at.field("timeout"), durations::at_least_1ms(timeout));
    }
}

#[cfg(test)]
mod tests {
    use super::jwks_uri;

    #[test]
    fn jwks_uris() {
        assert!(jwks_uri("https://www.googleapis.com/oauth2/v3/certs").is_ok());
        assert!(jwks_uri("http://jwks.default.svc:8080/keys").is_ok());
        assert!(jwks_uri("ftp://example.com/keys").is_err());
        assert!(jwks_uri("https:///keys").is_err());
        assert!(jwks_uri("https://example.com:port/keys").is_err());
    }
}

#[cfg(test)]
mod rule_tests {
    use super::super::test_support::*;

    fn rule(body: &str) -> String {
        doc(
            "security.istio.io/v1",
            "RequestAuthentication",
            &format!("  jwtRules:\n  - issuer: issuer@example.com\n{body}"),
        )
    }

    #[test]
    fn jwt_rule_fields() {
        assert_valid(&rule(
            "    jwks: '{\"keys\": [{\"kty\": \"RSA\", \"e\": \"AQAB\", \"n\": \"xyz\"}]}'\n    fromParams: [token]\n    timeout: 5s\n",
        ));
        assert_one_error(
            &rule("    audiences: ['']\n"),
            "spec.jwtRules[0].audiences[0]",
        );
        assert_one_error(&rule("    jwks: 'not json'\n"), "spec.jwtRules[0].jwks");
        assert_one_error(
            &rule("    fromParams: ['']\n"),
            "spec.jwtRules[0].fromParams[0]",
        );
        assert_one_error(
            &rule("    fromCookies: ['']\n"),
            "spec.jwtRules[0].fromCookies[0]",
        );
        assert_one_error(
            &rule("    outputClaimToHeaders: [{header: 'x jwt', claim: sub}]\n"),
            "spec.jwtRules[0].outputClaimToHeaders[0].header",
        );
        assert_one_error(
            &rule("    outputClaimToHeaders: [{header: x-sub, claim: ''}]\n"),
            "spec.jwtRules[0].outputClaimToHeaders[0].claim",
        );
        assert_one_error(&rule("    timeout: 0s\n"), "spec.jwtRules[0].timeout");
        assert_one_error(
            &rule("    spaceDelimitedClaims: ['']\n"),
            "spec.jwtRules[0].spaceDelimitedClaims[0]",
        );
    }

    #[test]
    fn attaches_once() {
        let doc = doc(
            "security.istio.io/v1",
            "RequestAuthentication",
            "  selector: {matchLabels: {app: a}}\n  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]\n",
        );
        assert_one_error(&doc, "spec");
    }
}

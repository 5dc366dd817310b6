//! Istio match conditions as Envoy route matches: path, headers (and the
//! pseudo-headers for method, authority and scheme), query parameters.

use mesh_config::networking::virtual_service::{HttpMatchRequest, StringMatch};
use trireme_proto::envoy::pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, RouteMatch, header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier, route_match::PathSpecifier,
};
use trireme_proto::envoy::pb::envoy::r#type::matcher::v3::{
    RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};
use trireme_proto::envoy::pb::google::protobuf::BoolValue;

/// The Envoy match of an Istio condition; no condition matches everything.
pub(super) fn route_match(condition: Option<&HttpMatchRequest>) -> RouteMatch {
    let catch_all = Some(PathSpecifier::Prefix("/".into()));
    let Some(condition) = condition else {
        return RouteMatch {
            path_specifier: catch_all,
            ..Default::default()
        };
    };
    let path_specifier = condition
        .uri
        .as_ref()
        .and_then(path_specifier)
        .or(catch_all);
    let mut headers: Vec<HeaderMatcher> = condition
        .headers
        .iter()
        .map(|(name, m)| header_matcher(name, m))
        .chain(
            condition
                .without_headers
                .iter()
                .map(|(name, m)| absent_header_matcher(name, m)),
        )
        .collect();
    headers.sort_by(|a, b| a.name.cmp(&b.name));
    let pseudo_headers = [
        (":method", &condition.method),
        (":authority", &condition.authority),
        (":scheme", &condition.scheme),
    ];
    for (name, m) in pseudo_headers {
        if let Some(m) = m {
            headers.push(header_matcher(name, m));
        }
    }
    RouteMatch {
        path_specifier,
        case_sensitive: Some(BoolValue {
            value: !condition.ignore_uri_case.unwrap_or(false),
        }),
        headers,
        query_parameters: condition
            .query_params
            .iter()
            .map(|(name, m)| query_matcher(name, m))
            .collect(),
        ..Default::default()
    }
}

fn path_specifier(uri: &StringMatch) -> Option<PathSpecifier> {
    if let Some(exact) = &uri.exact {
        return Some(PathSpecifier::Path(exact.clone()));
    }
    if let Some(prefix) = &uri.prefix {
        return Some(PathSpecifier::Prefix(prefix.clone()));
    }
    uri.regex
        .as_ref()
        .map(|regex| PathSpecifier::SafeRegex(regex_matcher(regex)))
}

/// Istio's "any value" forms of a string match: nothing set, or the regex `*`
/// (not a valid RE2 pattern, historically accepted to mean "present").
fn means_present(m: &StringMatch) -> bool {
    m.regex.as_deref() == Some("*") || string_matcher(m).is_none()
}

fn header_matcher(name: &str, m: &StringMatch) -> HeaderMatcher {
    let specifier = match string_matcher(m) {
        Some(matcher) if !means_present(m) => HeaderMatchSpecifier::StringMatch(matcher),
        _ => HeaderMatchSpecifier::PresentMatch(true),
    };
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(specifier),
        ..Default::default()
    }
}

/// `withoutHeaders`: the inverse of the header match. A missing header counts
/// as the empty value, so a request without it passes a value condition.
fn absent_header_matcher(name: &str, m: &StringMatch) -> HeaderMatcher {
    HeaderMatcher {
        invert_match: true,
        treat_missing_header_as_empty: !means_present(m),
        ..header_matcher(name, m)
    }
}

fn query_matcher(name: &str, m: &StringMatch) -> QueryParameterMatcher {
    let specifier = match string_matcher(m) {
        Some(matcher) if !means_present(m) => QueryParameterMatchSpecifier::StringMatch(matcher),
        _ => QueryParameterMatchSpecifier::PresentMatch(true),
    };
    QueryParameterMatcher {
        name: name.to_string(),
        query_parameter_match_specifier: Some(specifier),
    }
}

/// Envoy's form of an Istio string match. An empty prefix becomes the regex
/// `.*` because Envoy refuses empty prefixes but the meaning is the same.
pub(super) fn string_matcher(m: &StringMatch) -> Option<StringMatcher> {
    let pattern = if let Some(exact) = &m.exact {
        MatchPattern::Exact(exact.clone())
    } else if let Some(prefix) = &m.prefix {
        if prefix.is_empty() {
            MatchPattern::SafeRegex(regex_matcher(".*"))
        } else {
            MatchPattern::Prefix(prefix.clone())
        }
    } else {
        MatchPattern::SafeRegex(regex_matcher(m.regex.as_ref()?))
    };
    Some(StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    })
}

pub(super) fn regex_matcher(regex: &str) -> RegexMatcher {
    // No engine: Envoy's default (RE2) is what Istio's regexes are written for.
    RegexMatcher {
        regex: regex.to_string(),
        engine_type: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_prefix_and_star_regex_mean_present() {
        let star = StringMatch {
            regex: Some("*".into()),
            ..Default::default()
        };
        let empty = StringMatch::default();
        for m in [&star, &empty] {
            let matcher = header_matcher("x", m);
            assert_eq!(
                matcher.header_match_specifier,
                Some(HeaderMatchSpecifier::PresentMatch(true))
            );
        }
        let any_prefix = StringMatch {
            prefix: Some(String::new()),
            ..Default::default()
        };
        let matcher = string_matcher(&any_prefix).unwrap();
        assert_eq!(
            matcher.match_pattern,
            Some(MatchPattern::SafeRegex(regex_matcher(".*")))
        );
    }
}

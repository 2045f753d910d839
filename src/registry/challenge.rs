//! Owns: a registry's authentication challenge (the `WWW-Authenticate`
//! of its 401 answer to `GET /v2/`) and the rule for where credentials
//! may go. Credentials are sent only after a challenge: `Basic` to the
//! registry that challenged, `Bearer` to the token service it names; and
//! never in clear text: only over https, or plain HTTP to a loopback host.
//! Pure (the client does the requests).
use crate::net::is_loopback;

/// What a registry answered to an anonymous `GET /v2/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// No 401 challenge: anonymous requests are served; nothing is sent.
    None,
    /// `Basic`: the credentials go to the registry itself.
    Basic,
    /// `Bearer`: a token from `realm` (scoped per repository).
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// The challenge of `WWW-Authenticate` header values, Bearer preferred
/// over Basic; `Challenge::None` when neither is there (or unparsable).
pub fn parse<'a>(headers: impl IntoIterator<Item = &'a str>) -> Challenge {
    let mut found = Challenge::None;
    for value in headers {
        let Ok(challenges) = http_auth::parse_challenges(value) else {
            continue;
        };
        for challenge in challenges {
            if challenge.scheme.eq_ignore_ascii_case("bearer") {
                let param = |name: &str| {
                    challenge
                        .params
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.to_unescaped())
                };
                if let Some(realm) = param("realm") {
                    return Challenge::Bearer {
                        realm,
                        service: param("service"),
                    };
                }
            } else if challenge.scheme.eq_ignore_ascii_case("basic") {
                found = Challenge::Basic;
            }
        }
    }
    found
}

/// Whether credentials may travel to `url`: https, or plain HTTP to a
/// loopback host (where no one else is on the wire).
pub fn may_send_to(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    match parsed.scheme() {
        "https" => true,
        // host_str keeps an IPv6 address's brackets, as is_loopback reads it.
        "http" => parsed.host_str().is_some_and(is_loopback),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_read_bearer_first() {
        assert_eq!(parse([]), Challenge::None);
        assert_eq!(parse(["Basic realm=\"r\""]), Challenge::Basic);
        assert_eq!(
            parse([
                "Basic realm=\"r\"",
                "Bearer realm=\"https://auth.example/token\",service=\"reg\",scope=\"x\""
            ]),
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg".into()),
            }
        );
        // A Bearer challenge without a realm names no token service.
        assert_eq!(parse(["Bearer service=\"x\""]), Challenge::None);
        assert_eq!(parse(["Negotiate"]), Challenge::None);
    }

    #[test]
    fn credentials_travel_only_encrypted_or_on_loopback() {
        assert!(may_send_to("https://auth.example/token"));
        assert!(may_send_to("http://127.0.0.1:5000/token"));
        assert!(may_send_to("http://localhost/token"));
        assert!(may_send_to("http://[::1]:80/token"));
        assert!(!may_send_to("http://auth.example/token"));
        assert!(!may_send_to("http://10.0.0.1/token"));
        assert!(!may_send_to("ftp://127.0.0.1/token"));
        assert!(!may_send_to("not a url"));
    }
}

//! Owns: the Web Key Directory address of an e-mail address
//! (draft-koch-openpgp-webkey-service): the SHA-1 of the lower-cased local
//! part in z-base-32, under the advanced (`openpgpkey.DOMAIN`) and the
//! direct (`DOMAIN`) method. Pure. z-base-32 is written here (twelve lines):
//! the one crate for it is LGPL and unmaintained.
use sha1::{Digest as _, Sha1};

/// The two WKD URLs for `email`, advanced method first; None when the
/// address has no `local@domain` shape.
pub fn urls(email: &str) -> Option<[String; 2]> {
    let (local, domain) = email.trim().rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() || domain.contains('/') {
        return None;
    }
    let domain = domain.to_ascii_lowercase();
    let hash = zbase32(&Sha1::digest(local.to_lowercase().as_bytes()));
    let query = percent_encoding::utf8_percent_encode(local, percent_encoding::NON_ALPHANUMERIC);
    Some([
        format!("https://openpgpkey.{domain}/.well-known/openpgpkey/{domain}/hu/{hash}?l={query}"),
        format!("https://{domain}/.well-known/openpgpkey/hu/{hash}?l={query}"),
    ])
}

/// The e-mail address inside a user ID (`Name <mail>` or a bare address).
pub fn email_of(user_id: &str) -> Option<&str> {
    match (user_id.rfind('<'), user_id.rfind('>')) {
        (Some(open), Some(close)) if open < close => Some(&user_id[open + 1..close]),
        _ if user_id.contains('@') && !user_id.contains(' ') => Some(user_id),
        _ => None,
    }
}

/// z-base-32 (human-oriented base-32), as WKD uses it.
fn zbase32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drafts_example_address() {
        // draft-koch-openpgp-webkey-service, section 3.1.
        let [advanced, direct] = urls("Joe.Doe@Example.ORG").unwrap();
        assert_eq!(
            advanced,
            "https://openpgpkey.example.org/.well-known/openpgpkey/example.org/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe%2EDoe"
        );
        assert_eq!(
            direct,
            "https://example.org/.well-known/openpgpkey/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe%2EDoe"
        );
    }

    #[test]
    fn user_ids_give_their_address() {
        assert_eq!(
            email_of("Lance R. Vick <lance@vick.house>"),
            Some("lance@vick.house")
        );
        assert_eq!(email_of("ops@example.org"), Some("ops@example.org"));
        assert_eq!(email_of("No Mail Here"), None);
        assert!(urls("nodomain@").is_none());
    }
}
